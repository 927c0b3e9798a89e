using System.Text;
using Cobra.AI.Loading;
using Cobra.Cli;
using Microsoft.Extensions.AI;
using Xunit;

namespace Cobra.AI.Tests.Cli;

/// <summary>The command line itself: help, typo suggestions, validation, exit codes; <c>cobra chat</c> with piped input; download progress.</summary>
[Collection(HubEnvironment.Name)]
public sealed class CommandLineTests
{
    private static readonly string Scene = Golden.Fixtures("tiny-a", "images", "scene_100x70.png");

    [Theory]
    [InlineData("generate", "--max-new-tokens")]
    [InlineData("chat", "--verbose")]
    [InlineData("serve", "--state-store")]
    [InlineData("serve", "--max-pending")]
    [InlineData("download", "--revision")]
    [InlineData("convert", "--output")]
    [InlineData("bench", "--prefill-tokens")]
    public async Task Every_command_has_its_own_help_listing_its_options(string command, string option)
    {
        var (exit, output, error) = await CliRunner.RunAsync(command, "--help");
        Assert.True(exit == 0, error);
        Assert.Contains($"cobra {command} [options]", output.Replace("testhost", "cobra", StringComparison.Ordinal), StringComparison.Ordinal);
        Assert.Contains(option, output, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("--modle-dir", "--model-dir")]
    [InlineData("--max-new-token", "--max-new-tokens")]
    public async Task A_mistyped_option_exits_2_suggesting_the_right_one(string typo, string suggestion)
    {
        var (exit, _, error) = await CliRunner.RunAsync("generate", typo, "x", "--prompt", "hi");
        Assert.Equal(2, exit);
        Assert.Contains(typo, error, StringComparison.Ordinal);
        Assert.Contains(suggestion, error, StringComparison.Ordinal);
        Assert.Contains("cobra generate --help", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_mistyped_command_suggests_the_command()
    {
        var (exit, _, error) = await CliRunner.RunAsync("genrate", "--prompt", "hi");
        Assert.Equal(2, exit);
        Assert.Contains("generate", error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("serve", "--max-pending", "0", "--max-pending must be an integer in [1, 100000], not '0'.")]
    [InlineData("convert", "--precision", "fp16", "--precision must be bf16 or fp32, not 'fp16'.")]
    [InlineData("chat", "--top-p", "1.5", "--top-p must be a number in [0, 1], not '1.5'.")]
    [InlineData("generate", "--seed", "x", "--seed must be an integer, not 'x'.")]
    public async Task Invalid_values_exit_2_with_a_message_naming_the_option(string command, string option, string value, string message)
    {
        string[] extra = command switch { "convert" => ["--output", "o"], "generate" => ["--prompt", "p"], _ => [] };
        var (exit, _, error) = await CliRunner.RunAsync([command, option, value, .. extra]);
        Assert.Equal(2, exit);
        Assert.Contains(message, error, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Chat_with_piped_input_streams_answers_reuses_state_between_turns_and_resets()
    {
        string input = $"/image {Scene}\nWhat is going on in this image?\nTell me more.\n/reset\nHello\n/exit\nnever read\n";
        var stdout = new StringWriter();
        var (exit, output, error) = await CliRunner.RunWithInputAsync(input, stdout, new CliInterrupts(),
            "chat", "--model-dir", Golden.TinyAHub, "--device", "cpu", "--max-new-tokens", "6", "--verbose");
        Assert.True(exit == 0, error);

        // The first answer is the client's own answer to the same conversation.
        using var client = await CobraChatClient.LoadAsync(new CobraModelOptions { ModelPath = Golden.TinyAHub, Device = "cpu" });
        var expected = await client.GetResponseAsync(
            [new ChatMessage(ChatRole.User, [new DataContent(await File.ReadAllBytesAsync(Scene), "image/png"), new TextContent("What is going on in this image?")])],
            new ChatOptions { MaxOutputTokens = 6, Temperature = 0 });
        Assert.StartsWith(expected.Text + "\n", output, StringComparison.Ordinal);

        var counts = error.Split('\n').Where(l => l.StartsWith("[tokens:", StringComparison.Ordinal)).ToList();
        Assert.Equal(3, counts.Count);
        Assert.Contains("(0 cached)", counts[0], StringComparison.Ordinal);
        Assert.DoesNotContain("(0 cached)", counts[1], StringComparison.Ordinal);     // the second turn reuses the first's state
        Assert.Contains("(0 cached)", counts[2], StringComparison.Ordinal);           // after /reset nothing is reused
        Assert.Contains("new conversation", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Ctrl_c_during_an_answer_stops_that_answer_and_the_session_goes_on()
    {
        var interrupts = new CliInterrupts();
        var stdout = new InterruptingWriter(interrupts);
        var (exit, _, error) = await CliRunner.RunWithInputAsync("Write a short story about a cobra.\nHello\n", stdout, interrupts,
            "chat", "--model-dir", Golden.TinyAHub, "--device", "cpu", "--max-new-tokens", "200", "--verbose");
        Assert.True(exit == 0, error);
        Assert.Contains("answer stopped", error, StringComparison.Ordinal);
        var counts = error.Split('\n').Where(l => l.StartsWith("[tokens:", StringComparison.Ordinal)).ToList();
        Assert.Single(counts);                                                   // the stopped answer reports nothing; the next one completes
    }

    [Fact]
    public async Task Chat_reports_a_bad_image_command_and_keeps_going()
    {
        var (exit, output, error) = await CliRunner.RunWithInputAsync("/image /no/such/file.png\n/bogus\nHello\n", new StringWriter(), new CliInterrupts(),
            "chat", "--model-dir", Golden.TinyAHub, "--device", "cpu", "--max-new-tokens", "2");
        Assert.True(exit == 0, error);
        Assert.Contains("/no/such/file.png", error, StringComparison.Ordinal);
        Assert.Contains("unknown command '/bogus'", error, StringComparison.Ordinal);
        Assert.NotEmpty(output.Trim());
    }

    [Fact]
    public void Progress_on_a_terminal_is_redrawn_at_most_every_100_ms()
    {
        var now = TimeSpan.Zero;
        var output = new StringWriter();
        var bar = new DownloadProgressBar(output, terminal: true, () => now);
        for (int i = 1; i <= 1000; i++)
        {
            bar.Report(new DownloadProgress("org/repo", "big.bin", i * 1000, 10_000_000));
            now += TimeSpan.FromMilliseconds(1);                                 // 1000 reads in one second
        }

        bar.Done();
        int redraws = output.ToString().Count(c => c == '\r');
        Assert.InRange(redraws, 9, 11);
    }

    [Fact]
    public void Progress_into_a_log_is_plain_periodic_lines_and_one_per_finished_file()
    {
        var now = TimeSpan.Zero;
        var output = new StringWriter();
        var bar = new DownloadProgressBar(output, terminal: false, () => now);
        for (int i = 1; i <= 100; i++)
        {
            bar.Report(new DownloadProgress("org/repo", "big.bin", i * 100_000, 10_000_000));
            now += TimeSpan.FromMilliseconds(200);                               // 20 s in all
        }

        bar.Report(new DownloadProgress("org/repo", "small.json", 10, 10));
        bar.Report(new DownloadProgress("org/repo", "small.json", 10, 10));       // the repeated final report is not printed again
        bar.Done();
        string text = output.ToString();
        Assert.DoesNotContain('\r', text);
        var lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.InRange(lines.Count(l => l.StartsWith("org/repo/big.bin", StringComparison.Ordinal)), 4, 6);
        Assert.Contains("100.0%", lines.Last(l => l.StartsWith("org/repo/big.bin", StringComparison.Ordinal)), StringComparison.Ordinal);
        Assert.Single(lines, l => l.StartsWith("org/repo/small.json", StringComparison.Ordinal));
    }

    /// <summary>Presses Ctrl+C (through the interrupts) when the first answer's first text arrives.</summary>
    private sealed class InterruptingWriter(CliInterrupts interrupts) : StringWriter
    {
        private bool pressed;

        public override Task WriteAsync(string? value)
        {
            if (!pressed && !string.IsNullOrEmpty(value))
            {
                pressed = interrupts.TryInterrupt();
            }

            return base.WriteAsync(value);
        }

        public override Encoding Encoding => Encoding.UTF8;
    }
}
