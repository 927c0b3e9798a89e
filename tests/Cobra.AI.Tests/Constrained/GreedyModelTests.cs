using System.Text;
using Cobra.AI.Generation.Constrained;
using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Mamba;
using Microsoft.Extensions.AI;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.Constrained;

/// <summary>
/// Greedy decoding of a random-weight Mamba over the padded GPT-NeoX vocabulary, masked by the constraint: the
/// engine's situation (a model that repeats itself and never closes a string on its own), without the engine.
/// </summary>
public sealed class GreedyModelTests
{
    public GreedyModelTests() => TorchRuntime.EnsureInitialized();

    public static TheoryData<string> Shapes() => SchemaShapes.Names();

    [Theory]
    [MemberData(nameof(Shapes))]
    public void A_random_model_answers_with_valid_json_within_its_token_budget(string shape)
    {
        string schema = SchemaShapes.All[shape];
        int budget = Math.Max(120, ConstraintHarness.Grammar(schema).Root.MinBytes + 40);
        string text = Greedy(ConstraintHarness.Create(schema, budget), budget, seed: 7, out int tokens);
        Assert.True(tokens <= budget, $"{tokens} tokens > budget {budget}");
        ConstraintHarness.AssertValid(schema, text);
    }

    [Fact]
    public void Json_mode_with_a_random_model_gives_an_object()
    {
        string text = Greedy(ConstraintHarness.Create(ChatResponseFormat.Json, 60), 60, seed: 3, out _);
        Assert.StartsWith("{", text, StringComparison.Ordinal);
        using var document = System.Text.Json.JsonDocument.Parse(text);
    }

    private static string Greedy(ITokenConstraint constraint, int budget, long seed, out int tokens)
    {
        using var model = new MambaForCausalLM(new MambaConfig { DModel = 16, NLayer = 1, VocabSize = ConstraintHarness.PaddedVocab }, ScalarType.Float32, torch.CPU);
        MambaRandomInit.Fill(model, seed);
        using var noGrad = torch.no_grad();
        using var state = model.NewState();
        var allowed = new bool[ConstraintHarness.PaddedVocab];
        var bytes = new List<byte>();
        int eos = ConstraintHarness.Tokenizer.EosTokenId;
        // One buffer for all steps: a fresh 200 KB array per step would churn the large-object heap.
        var logits = new float[ConstraintHarness.PaddedVocab];
        using (var scope = torch.NewDisposeScope())
        {
            model.Forward(model.Embed(torch.tensor(new long[] { 510, 1182 }).unsqueeze(0)), state).data<float>().CopyTo(logits);
        }

        tokens = 0;
        while (!constraint.IsComplete && tokens <= budget)
        {
            constraint.FillAllowed(allowed);
            int best = -1;
            for (int id = 0; id < logits.Length; id++)
            {
                if (allowed[id] && (best < 0 || logits[id] > logits[best]))
                {
                    best = id;
                }
            }

            constraint.Accept(best);
            if (best == eos)
            {
                break;
            }

            tokens++;
            bytes.AddRange(ConstraintHarness.TokenBytes(best));
            using var scope = torch.NewDisposeScope();
            model.Step(torch.tensor(new long[] { best }), state).data<float>().CopyTo(logits);
        }

        Assert.True(constraint.IsComplete, Encoding.UTF8.GetString(bytes.ToArray()));
        return new UTF8Encoding(false, true).GetString(bytes.ToArray());
    }
}
