using Cobra.AI.Generation;
using Cobra.AI.Loading;
using TorchSharp;
using Xunit;
using static Cobra.AI.Tests.Generation.EngineTestKit;

namespace Cobra.AI.Tests.Generation;

/// <summary>
/// The golden cases through the one generation path: prompt ids and image in, greedy ids and the logits that
/// chose them out, for several prefill chunk sizes, alone and while other requests join and leave its batch.
/// </summary>
public sealed class EngineParityTests
{
    public static TheoryData<string, string?, int> Cases()
    {
        var data = new TheoryData<string, string?, int>();
        foreach (int chunk in new[] { 1, 7, 256 })
        {
            data.Add("text_only", null, chunk);
            data.Add("img_scene", "scene_100x70.png", chunk);
            data.Add("img_rgba", "badge_64x64_rgba.png", chunk);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Golden_case_alone_reproduces_greedy_ids_and_logits(string kitCase, string? image, int chunk)
    {
        using var engine = Engine(new EngineSettings { PrefillChunkTokens = chunk, CacheEntries = 0 });
        await AssertGoldenAsync(engine, kitCase, image);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Golden_case_sharing_its_batch_with_requests_that_join_and_leave(string kitCase, string? image, int chunk)
    {
        using var engine = Engine(new EngineSettings { PrefillChunkTokens = chunk, MaxActive = 5, CacheEntries = 4 });
        var random = new Random(chunk * 31 + kitCase.Length);
        using var stop = new CancellationTokenSource();
        var mates = Enumerable.Range(0, 4).Select(k => Task.Run(async () =>
        {
            var rng = new Random(random.Next() + k);
            while (!stop.IsCancellationRequested)
            {
                var prompt = Enumerable.Range(0, rng.Next(1, 40)).Select(_ => rng.Next(1, 500)).ToArray();
                var request = Greedy(prompt, rng.Next(1, 12), rng.Next(3) == 0 ? Image("scene_100x70.png") : null, "mate-image");
                using var cancel = new CancellationTokenSource(rng.Next(4) == 0 ? rng.Next(1, 200) : Timeout.Infinite);
                try
                {
                    await RunAsync(engine, request, cancel.Token);
                }
                catch (OperationCanceledException)
                {
                    // some batch-mates leave early on purpose
                }
            }
        })).ToArray();

        try
        {
            await Task.Delay(random.Next(0, 150));
            await AssertGoldenAsync(engine, kitCase, image);
            await AssertGoldenAsync(engine, kitCase, image);                      // again, now probably resuming from a snapshot
        }
        finally
        {
            await stop.CancelAsync();
            await Task.WhenAll(mates);
        }
    }

    private static async Task AssertGoldenAsync(InferenceEngine engine, string kitCase, string? image)
    {
        using var expected = SafetensorsFile.Open(Golden.Expected(kitCase));
        var prompt = Golden.Ids(expected, "input_ids").Select(i => (int)i).ToArray();
        var greedy = Golden.Ids(expected, "decode.greedy_ids");
        var request = Greedy(prompt, greedy.Length, image is null ? null : Image(image), image) with { CaptureLogits = true };
        var outcome = await RunAsync(engine, request);
        Assert.Equal(greedy, outcome.Choice.OutputIds.Select(i => (long)i));
        using var scope = torch.NewDisposeScope();
        var logits = torch.tensor(outcome.Choice.Logits!.SelectMany(r => r).ToArray(), [outcome.Choice.Logits!.Count, outcome.Choice.Logits[0].Length]);
        Golden.AssertClose(expected.Read("decode.logits"), logits, $"{kitCase} step logits through the engine");
    }
}
