using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Microsoft.Extensions.AI;

namespace Cobra.AI.Server;

/// <summary>One streaming update and the choice (<c>choices[index]</c>) it belongs to.</summary>
internal readonly record struct ChoiceUpdate(int Index, ChatResponseUpdate Update);

/// <summary>Runs a request's <c>n</c> choices and yields their updates tagged with the choice index.</summary>
internal static class ChoiceStreams
{
    /// <summary>True when the client is Cobra's (it forks one prefill into n choices and reports logprobs).</summary>
    public static bool IsCobra(IChatClient client) =>
        client.GetService(typeof(CobraChatClient)) is not null
        || client.GetService(typeof(ChatClientMetadata)) is ChatClientMetadata { ProviderName: "cobra" };

    /// <summary>
    /// Cobra (or n = 1): one call; each update names its choice in
    /// <see cref="CobraAdditionalProperties.ChoiceIndex"/> (absent = 0). Any other client: n calls with seeds
    /// <c>seed + i</c>, merged.
    /// </summary>
    public static IAsyncEnumerable<ChoiceUpdate> Generate(IChatClient client, ChatRequest request, bool cobra, CancellationToken cancellationToken) =>
        cobra || request.Choices == 1 ? Single(client, request, cancellationToken) : FanOut(client, request, cancellationToken);

    private static async IAsyncEnumerable<ChoiceUpdate> Single(IChatClient client, ChatRequest request, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        await foreach (var update in client.GetStreamingResponseAsync(request.Messages, request.Options, cancellationToken).ConfigureAwait(false))
        {
            int index = update.AdditionalProperties?.TryGetValue(CobraAdditionalProperties.ChoiceIndex, out object? value) == true && value is not null
                ? Convert.ToInt32(value, System.Globalization.CultureInfo.InvariantCulture)
                : 0;
            if (index < 0 || index >= request.Choices)
            {
                throw new InvalidOperationException($"The chat client sent an update for choice {index} of a request with n = {request.Choices}.");
            }

            yield return new ChoiceUpdate(index, update);
        }
    }

    private static async IAsyncEnumerable<ChoiceUpdate> FanOut(IChatClient client, ChatRequest request, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var channel = Channel.CreateBounded<ChoiceUpdate>(new BoundedChannelOptions(64) { SingleReader = true });
        var producers = Enumerable.Range(0, request.Choices).Select(i => Task.Run(async () =>
        {
            var options = request.Options.Clone();
            options.Seed += i;
            await foreach (var update in client.GetStreamingResponseAsync(request.Messages, options, stop.Token).ConfigureAwait(false))
            {
                await channel.Writer.WriteAsync(new ChoiceUpdate(i, update), stop.Token).ConfigureAwait(false);
            }
        }, stop.Token)).ToArray();
        var completion = Task.WhenAll(producers).ContinueWith(
            t => channel.Writer.TryComplete(t.Exception?.InnerExceptions.FirstOrDefault(e => e is not OperationCanceledException) ?? t.Exception?.InnerException),
            CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        try
        {
            while (true)
            {
                ChoiceUpdate item;
                try
                {
                    if (!await channel.Reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
                    {
                        break;
                    }

                    if (!channel.Reader.TryRead(out item))
                    {
                        continue;
                    }
                }
                catch (ChannelClosedException e) when (e.InnerException is not null)
                {
                    System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e.InnerException);
                    throw;
                }

                yield return item;
            }

            if (channel.Reader.Completion.IsFaulted)
            {
                await channel.Reader.Completion.ConfigureAwait(false);
            }
        }
        finally
        {
            await stop.CancelAsync().ConfigureAwait(false);
            await completion.ConfigureAwait(false);
        }
    }
}
