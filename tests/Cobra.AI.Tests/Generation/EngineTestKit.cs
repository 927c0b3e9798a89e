using Cobra.AI.Generation;
using Cobra.AI.Imaging;
using Cobra.AI.Loading;
using Cobra.AI.Modeling;
using Microsoft.Extensions.Logging.Abstractions;
using TorchSharp;

namespace Cobra.AI.Tests.Generation;

/// <summary>Engines over the tiny-a kit and the outcome of one request.</summary>
internal static class EngineTestKit
{
    public static InferenceEngine Engine(EngineSettings? settings = null) =>
        new(CobraPipeline.Load(CobraModelFiles.FromHubMirror(Golden.TinyAHub), torch.CPU, Precision.Float32), settings ?? new EngineSettings(), NullLogger.Instance);

    private static readonly Lazy<CobraPipeline> Resizer = new(() => CobraPipeline.Load(CobraModelFiles.FromHubMirror(Golden.TinyAHub), torch.CPU, Precision.Float32));

    /// <summary>A kit image, resized for the towers as the chat client does before queueing.</summary>
    public static TowerImages Image(string file) => Resizer.Value.ResizeForTowers(ImageLoader.LoadFile(Golden.Fixtures("tiny-a", "images", file), new ImageLimits()));

    public static GenerationRequest Greedy(IReadOnlyList<int> prompt, int tokens, TowerImages? image = null, string? imageKey = null) =>
        new(prompt, image, imageKey ?? (image is null ? null : "test-image"), SamplingOptions.Greedy with { MaxNewTokens = tokens }, []);

    /// <summary>Everything a request produced, in order.</summary>
    public sealed record Outcome(IReadOnlyList<ChoiceCompleted> Choices, GenerationCompleted Done, IReadOnlyList<TextGenerated> Text)
    {
        public ChoiceCompleted Choice => Choices[0];

        public string TextOf(int choice) => string.Concat(Text.Where(t => t.Choice == choice).Select(t => t.Text));
    }

    public static async Task<Outcome> RunAsync(InferenceEngine engine, GenerationRequest request, CancellationToken cancellationToken = default)
    {
        var choices = new List<ChoiceCompleted>();
        var text = new List<TextGenerated>();
        GenerationCompleted? done = null;
        await foreach (var e in engine.Submit(request, cancellationToken).ReadAllAsync(CancellationToken.None))
        {
            switch (e)
            {
                case ChoiceCompleted c:
                    choices.Add(c);
                    break;
                case TextGenerated t:
                    text.Add(t);
                    break;
                case GenerationCompleted g:
                    done = g;
                    break;
            }
        }

        return new Outcome(choices.OrderBy(c => c.Choice).ToArray(), done!, text);
    }
}
