namespace Cobra.AI.Generation;

/// <summary>
/// How the next token is chosen, with mamba_ssm's <c>sample()</c> semantics (cobra-spec §9.2). Greedy
/// (argmax over all padded-vocabulary logits) when <see cref="Temperature"/> is 0 or
/// <see cref="TopK"/> is 1; otherwise top-k, then temperature, then top-p, then a multinomial draw.
/// </summary>
internal sealed record SamplingOptions
{
    /// <summary>Upstream's decoding for Cobra: greedy, at most 512 new tokens.</summary>
    public static SamplingOptions Greedy { get; } = new();

    /// <summary>Stop after this many generated tokens (upstream's <c>max_new_tokens</c>).</summary>
    public int MaxNewTokens { get; init; } = 512;

    /// <summary>0 = greedy; otherwise the logits are divided by it before sampling.</summary>
    public double Temperature { get; init; }

    /// <summary>0 = no limit, 1 = greedy, k &gt; 1 = sample among the k most likely tokens.</summary>
    public int TopK { get; init; }

    /// <summary>Nucleus sampling mass in (0, 1); 0 or 1 disables it.</summary>
    public double TopP { get; init; }

    /// <summary>Seed of the sampling generator; null draws one.</summary>
    public long? Seed { get; init; }

    /// <summary>CTRL-style repetition penalty over the prompt's text ids and the generated ids (1 = off), as mamba_ssm applies it.</summary>
    public double RepetitionPenalty { get; init; } = 1.0;

    /// <summary>OpenAI-style: subtracted from a token's logit once per earlier occurrence in the output (0 = off).</summary>
    public double FrequencyPenalty { get; init; }

    /// <summary>OpenAI-style: subtracted from a token's logit if it already occurs in the output (0 = off).</summary>
    public double PresencePenalty { get; init; }

    /// <summary>Token id that ends generation (<c>&lt;|endoftext|&gt;</c> = 0 for GPT-NeoX).</summary>
    public int EosTokenId { get; init; }

    /// <summary>True when every step is an argmax.</summary>
    public bool IsGreedy => Temperature <= 0 || TopK == 1;

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the first setting out of range.</summary>
    public void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxNewTokens, 1, nameof(MaxNewTokens));
        if (!double.IsFinite(Temperature) || Temperature < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(Temperature), Temperature, "Temperature must be a finite number >= 0.");
        }

        ArgumentOutOfRangeException.ThrowIfNegative(TopK, nameof(TopK));
        if (!double.IsFinite(TopP) || TopP < 0 || TopP > 1)
        {
            throw new ArgumentOutOfRangeException(nameof(TopP), TopP, "TopP must be in [0, 1].");
        }

        if (!double.IsFinite(RepetitionPenalty) || RepetitionPenalty <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(RepetitionPenalty), RepetitionPenalty, "RepetitionPenalty must be a finite number > 0.");
        }

        if (!double.IsFinite(FrequencyPenalty) || !double.IsFinite(PresencePenalty) || Math.Abs(FrequencyPenalty) > 2 || Math.Abs(PresencePenalty) > 2)
        {
            throw new ArgumentOutOfRangeException(nameof(FrequencyPenalty), "FrequencyPenalty and PresencePenalty must be in [-2, 2].");
        }
    }
}
