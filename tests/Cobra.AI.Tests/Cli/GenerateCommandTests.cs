using System.Text.Json;
using Cobra.AI.Loading;
using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Mamba;
using Cobra.Cli;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.Cli;

/// <summary><c>cobra generate</c> end to end, in process, against the golden kit and synthetic kits.</summary>
public sealed class GenerateCommandTests : IDisposable
{
    private readonly string scratch = Directory.CreateTempSubdirectory("cobra-cli-").FullName;

    public GenerateCommandTests() => TorchRuntime.EnsureInitialized();

    private static async Task<(int Exit, string Out, string Err)> Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int exit = await CobraCli.RunAsync(args, stdout, stderr);
        return (exit, stdout.ToString(), stderr.ToString());
    }

    [Fact]
    public async Task Json_output_reproduces_the_golden_prompt_and_greedy_ids()
    {
        using var expected = SafetensorsFile.Open(Golden.Expected("text_only"));
        var (exit, output, error) = await Run("generate", "--model-dir", Golden.TinyAHub, "--prompt", "Write a short story about a cobra.", "--max-new-tokens", "16", "--json");

        Assert.True(exit == 0, error);
        using var json = JsonDocument.Parse(output);
        var root = json.RootElement;
        Assert.Equal(Golden.Ids(expected, "input_ids"), root.GetProperty("prompt_token_ids").EnumerateArray().Select(e => e.GetInt64()));
        Assert.Equal(Golden.Ids(expected, "decode.greedy_ids"), root.GetProperty("output_token_ids").EnumerateArray().Select(e => e.GetInt64()));
        Assert.Equal("length", root.GetProperty("finish_reason").GetString());
        Assert.Equal("on ld not\u001a\u001a\u001anaknaknakand\ufffdimalshishothot", root.GetProperty("text").GetString());
        Assert.Equal(28 + 16, root.GetProperty("usage").GetProperty("total_tokens").GetInt32());
        Assert.True(root.GetProperty("timings").GetProperty("prefill_ms").GetDouble() >= 0);
    }

    [Fact]
    public async Task Logits_out_holds_the_prefill_and_step_logits_that_chose_each_token()
    {
        using var expected = SafetensorsFile.Open(Golden.Expected("text_only"));
        string path = Path.Combine(scratch, "logits.safetensors");
        var (exit, _, error) = await Run("generate", "--model-dir", Golden.TinyAHub, "--prompt", "Write a short story about a cobra.", "--max-new-tokens", "16", "--logits-out", path);

        Assert.True(exit == 0, error);
        using var logits = SafetensorsFile.Open(path);
        using var steps = logits.Read("step_logits");
        using var prefill = logits.Read("prefill_logits");
        Assert.Equal(ScalarType.Float32, steps.dtype);
        Golden.AssertClose(expected.Read("decode.logits"), steps, "step_logits");
        Golden.AssertClose(expected.Read("logits.prefill")[0, -1], prefill, "prefill_logits");
    }

    [Fact]
    public async Task Messages_file_builds_the_multi_turn_prompt_and_drops_system_turns()
    {
        string path = Path.Combine(scratch, "messages.json");
        await File.WriteAllTextAsync(path, """
            [{"role": "system", "content": "Be brief."},
             {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Again?"}]
            """);
        var (exit, output, error) = await Run("generate", "--model-dir", Golden.TinyAHub, "--messages", path, "--max-new-tokens", "3", "--json");

        Assert.True(exit == 0, error);
        Assert.Contains("system message", error, StringComparison.Ordinal);
        var tokenizer = Cobra.AI.Text.CobraTokenizer.FromFile(Golden.Fixtures("tiny-a", "hub", "xiuyul", "mamba-2.8b-zephyr", "tokenizer.json"));
        var expectedIds = tokenizer.Encode("<|user|>\nHi<|endoftext|>\n<|assistant|>\nHello<|endoftext|>\n<|user|>\nAgain?<|endoftext|>\n<|assistant|>\n");
        using var json = JsonDocument.Parse(output);
        Assert.Equal(expectedIds, json.RootElement.GetProperty("prompt_token_ids").EnumerateArray().Select(e => e.GetInt32()));
        Assert.Equal(3, json.RootElement.GetProperty("output_token_ids").GetArrayLength());
    }

    [Theory]
    [InlineData("""[{"role": "assistant", "content": "x"}]""", "expected")]
    [InlineData("""[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]""", "end with a user turn")]
    [InlineData("""[{"role": "tool", "content": "x"}]""", "role 'tool'")]
    [InlineData("""{"role": "user"}""", "JSON array")]
    [InlineData("""[{"role": "user", "content": 3}]""", "\"content\"")]
    [InlineData("not json", "not valid JSON")]
    public async Task Bad_messages_files_exit_1_naming_the_file_and_problem(string content, string problem)
    {
        string path = Path.Combine(scratch, "bad.json");
        await File.WriteAllTextAsync(path, content);
        var (exit, _, error) = await Run("generate", "--model-dir", Golden.TinyAHub, "--messages", path);
        Assert.Equal(1, exit);
        Assert.Contains(path, error, StringComparison.Ordinal);
        Assert.Contains(problem, error, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("generate", "--prompt", "x")]
    [InlineData("generate", "--model-dir", "d")]
    [InlineData("generate", "--model-dir", "d", "--prompt", "x", "--messages", "m")]
    [InlineData("generate", "--model-dir", "d", "--prompt", "x", "--max-new-tokens", "0")]
    [InlineData("generate", "--model-dir", "d", "--prompt", "x", "--temperature", "-1")]
    [InlineData("generate", "--model-dir", "d", "--prompt", "x", "--top-p", "2")]
    [InlineData("generate", "--model-dir", "d", "--prompt", "x", "--bogus")]
    [InlineData("generate", "--model-dir", "d", "--prompt")]
    [InlineData("generate", "--json=1", "--model-dir", "d", "--prompt", "x")]
    [InlineData("frobnicate")]
    public async Task Bad_arguments_exit_2_with_usage(params string[] args)
    {
        var (exit, _, error) = await Run(args);
        Assert.Equal(2, exit);
        Assert.Contains("Usage: cobra", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Missing_model_folder_exits_1_naming_it()
    {
        string missing = Path.Combine(scratch, "nowhere");
        var (exit, _, error) = await Run("generate", "--model-dir", missing, "--prompt", "x");
        Assert.Equal(1, exit);
        Assert.Contains(missing, error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Sampling_with_a_seed_is_reproducible_and_differs_from_greedy()
    {
        string[] args = ["generate", "--model-dir", Golden.TinyAHub, "--prompt", "Hello", "--max-new-tokens", "12", "--temperature", "1.5", "--seed", "7", "--json"];
        var first = await Run(args);
        var second = await Run(args);
        var greedy = await Run("generate", "--model-dir", Golden.TinyAHub, "--prompt", "Hello", "--max-new-tokens", "12", "--json");
        static string Ids(string json) => JsonDocument.Parse(json).RootElement.GetProperty("output_token_ids").GetRawText();
        Assert.Equal(0, first.Exit);
        Assert.Equal(Ids(first.Out), Ids(second.Out));
        Assert.NotEqual(Ids(greedy.Out), Ids(first.Out));
    }

    [Theory]
    [InlineData(8, 3, 3, 601, 8)]
    [InlineData(4, 2, 1, 590, 16)]
    [InlineData(32, 5, 2, 581, 1)]
    public async Task Kits_of_other_sizes_generate_the_greedy_ids_of_their_full_sequence_logits(int dState, int dConv, int layers, int vocab, int padMultiple)
    {
        var config = new MambaConfig { DModel = 40, NLayer = layers, VocabSize = vocab, DState = dState, DConv = dConv, PadVocabSizeMultiple = padMultiple, DtRankOverride = dState == 8 ? 5 : null };
        using var kit = SyntheticKit.Create(config, seed: dState + dConv);
        var (exit, output, error) = await Run("generate", "--model-dir", kit.Root, "--prompt", "Write a short story about a cobra.", "--max-new-tokens", "10", "--json");
        Assert.True(exit == 0, error);
        using var json = JsonDocument.Parse(output);
        long[] prompt = json.RootElement.GetProperty("prompt_token_ids").EnumerateArray().Select(e => e.GetInt64()).ToArray();
        long[] generated = json.RootElement.GetProperty("output_token_ids").EnumerateArray().Select(e => e.GetInt64()).ToArray();

        // Oracle: the sequential-scan full-sequence pass over prompt + generated ids must pick the same ids.
        using var scope = torch.NewDisposeScope();
        using var model = kit.LoadModel();
        Assert.Equal(config.PaddedVocabSize, model.Backbone.Embedding.shape[0]);
        using var state = model.NewState();
        var logits = model.Forward(model.Embed(torch.tensor([.. prompt, .. generated[..^1]]).unsqueeze(0)), state, allPositions: true, SelectiveScan.Sequential);
        var chosen = logits[0].narrow(0, prompt.Length - 1, generated.Length).argmax(-1).data<long>().ToArray();
        Assert.Equal(chosen, generated);
    }

    public void Dispose() => Directory.Delete(scratch, recursive: true);
}
