using System.Diagnostics;
using Cobra.AI.Modeling;
using Microsoft.Extensions.AI;
using Xunit;

namespace Cobra.AI.Tests.Chat;

/// <summary>
/// Whole-process memory checks: they read the process's RSS, so they run alone (no other test class allocates
/// meanwhile), after the parallel ones.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ProcessMemoryCollection
{
    public const string Name = "process-memory";
}

[Collection(ProcessMemoryCollection.Name)]
public sealed class ProcessMemoryTests : IAsyncLifetime
{
    private CobraChatClient client = null!;

    public async Task InitializeAsync() => client = await CobraChatClientTests.Load();

    public Task DisposeAsync()
    {
        client.Dispose();
        return Task.CompletedTask;
    }

    private static ChatMessage SceneMessage() =>
        new(ChatRole.User, [new TextContent("What is going on in this image?"), new DataContent(File.ReadAllBytes(Golden.Fixtures("tiny-a", "images", "scene_100x70.png")), "image/png")]);

    [Fact]
    public async Task Many_turns_keep_memory_bounded()
    {
        for (int i = 0; i < 20; i++)
        {
            await client.GetResponseAsync([SceneMessage()], new ChatOptions { MaxOutputTokens = 2 });
        }

        await client.GetResponseAsync("warm", new ChatOptions { MaxOutputTokens = 2 });
        GC.Collect();
        long before = Process.GetCurrentProcess().WorkingSet64;
        long liveBefore = client.LiveTensorCount;
        for (int i = 0; i < 300; i++)
        {
            await client.GetResponseAsync([new ChatMessage(ChatRole.User, $"Turn {i % 7}")], new ChatOptions { MaxOutputTokens = 2 });
        }

        await client.GetResponseAsync("warm", new ChatOptions { MaxOutputTokens = 2 });
        GC.Collect();
        long growth = Process.GetCurrentProcess().WorkingSet64 - before;
        Assert.True(growth < 100L << 20, $"RSS grew {growth >> 20} MiB over 300 turns");

        // The conversation cache holds at most ConversationCacheSize snapshots; beyond that nothing may pile up.
        long perSnapshot = 2L * client.GetService<CobraModel>()!.LanguageModel.Config.NLayer;
        Assert.InRange(client.LiveTensorCount - liveBefore, -16 * perSnapshot, 16 * perSnapshot);
    }
}
