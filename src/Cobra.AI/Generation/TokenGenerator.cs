using System.Diagnostics;
using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Mamba;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Generation;

/// <summary>Why generation stopped, in OpenAI's vocabulary.</summary>
internal enum FinishReason
{
    /// <summary>The model produced the end-of-text token.</summary>
    Stop,

    /// <summary>The token limit was reached.</summary>
    Length,
}

/// <summary>Tokens and timings of one generation; the logits only when asked for (float32, CPU).</summary>
/// <param name="OutputIds">Generated ids, including the end-of-text token when it was produced (as upstream returns them).</param>
/// <param name="FinishReason">Why generation stopped.</param>
/// <param name="PrefillTime">Time of the full-sequence pass.</param>
/// <param name="DecodeTime">Time of the recurrent steps.</param>
/// <param name="StepLogits">[N, V]: row k is the logits that chose output token k (row 0 = last prefill position).</param>
internal sealed record GenerationResult(IReadOnlyList<int> OutputIds, FinishReason FinishReason, TimeSpan PrefillTime, TimeSpan DecodeTime, Tensor? StepLogits);

/// <summary>
/// Upstream's <c>decode()</c> for one sequence: prefill the whole input once (full-sequence path), then one
/// recurrent step per new token; stop after the end-of-text token or <see cref="SamplingOptions.MaxNewTokens"/>.
/// Runs synchronously on the calling thread; every step is its own dispose scope.
/// </summary>
internal static class TokenGenerator
{
    /// <summary>Generates from input embeddings [1, L, d_model] (image tokens already spliced in).</summary>
    /// <param name="model">The language model.</param>
    /// <param name="inputsEmbeds">Input embeddings; not modified.</param>
    /// <param name="options">Sampling settings.</param>
    /// <param name="keepLogits">Return the logits of every step in <see cref="GenerationResult.StepLogits"/>.</param>
    /// <param name="onToken">Called with each new id as soon as it is chosen.</param>
    /// <param name="cancellationToken">Checked between steps.</param>
    public static GenerationResult Generate(
        MambaForCausalLM model,
        Tensor inputsEmbeds,
        SamplingOptions options,
        bool keepLogits = false,
        Action<int>? onToken = null,
        CancellationToken cancellationToken = default)
    {
        using var noGrad = torch.no_grad();
        using var sampler = new Sampler(options, model.Device);
        using var state = model.NewState();
        var rows = new List<Tensor>();
        var output = new List<int>();
        try
        {
            var clock = Stopwatch.StartNew();
            var logits = Detached(() => model.Forward(inputsEmbeds, state));    // [1,V]
            var prefillTime = clock.Elapsed;
            clock.Restart();
            var finish = FinishReason.Length;
            while (true)
            {
                int token = Detached(() => sampler.Next(logits)).Apply(t => (int)t.item<long>());
                if (keepLogits)
                {
                    rows.Add(logits.cpu().DetachFromDisposeScope());
                }

                logits.Dispose();
                output.Add(token);
                onToken?.Invoke(token);
                if (token == options.EosTokenId)
                {
                    finish = FinishReason.Stop;
                    break;
                }

                if (output.Count >= options.MaxNewTokens)
                {
                    break;
                }

                cancellationToken.ThrowIfCancellationRequested();
                logits = Detached(() => model.Step(torch.tensor(new long[] { token }, device: model.Device), state));
            }

            var stepLogits = keepLogits ? torch.cat(rows, 0).DetachFromDisposeScope() : null; // [N,V]
            return new GenerationResult(output, finish, prefillTime, clock.Elapsed, stepLogits);
        }
        finally
        {
            foreach (var row in rows)
            {
                row.Dispose();
            }
        }
    }

    /// <summary>Runs <paramref name="compute"/> in its own dispose scope and keeps only its result.</summary>
    private static Tensor Detached(Func<Tensor> compute)
    {
        using var scope = torch.NewDisposeScope();
        return compute().DetachFromDisposeScope();
    }

    private static TResult Apply<TResult>(this Tensor tensor, Func<Tensor, TResult> read)
    {
        using (tensor)
        {
            return read(tensor);
        }
    }
}
