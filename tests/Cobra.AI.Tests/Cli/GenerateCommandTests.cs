using System.Text.Json;
using Cobra.AI.Loading;
using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Mamba;
using Cobra.Cli;
using Microsoft.Extensions.AI;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.Cli;

/// <summary><c>cobra generate</c> end to end, in process, against the golden kit and synthetic kits.</summary>
[Collection(HubEnvironment.Name)]
public sealed class GenerateCommandTests : IDisposable
{
    private readonly string scratch = Directory.CreateTempSubdirectory("cobra-cli-").FullName;

    public GenerateCommandTests() => TorchRuntime.EnsureInitialized();

    private static Task<(int Exit, string Out, string Err)> Run(params string[] args) => CliRunner.RunAsync(args);

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
    [InlineData("generate", "--model-dir", "d", "--cache-dir", "c", "--prompt", "x")]
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
    public async Task Hugging_face_cache_layout_is_resolved_by_revision()
    {
        string cache = Path.Combine(scratch, "hf");
        string commit = "0123456789abcdef0123456789abcdef01234567";
        foreach (var file in Directory.EnumerateFiles(Golden.TinyAHub, "*", SearchOption.AllDirectories))
        {
            var parts = Path.GetRelativePath(Golden.TinyAHub, file).Split(Path.DirectorySeparatorChar, 3);
            string repoDir = Path.Combine(cache, $"models--{parts[0]}--{parts[1]}");
            string target = Path.Combine(repoDir, "snapshots", commit, parts[2]);
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
            Directory.CreateDirectory(Path.Combine(repoDir, "refs"));
            await File.WriteAllTextAsync(Path.Combine(repoDir, "refs", "main"), commit);
        }

        var (exit, output, error) = await Run("generate", "--cache-dir", cache, "--prompt", "Write a short story about a cobra.", "--max-new-tokens", "16", "--json");
        Assert.True(exit == 0, error);
        using var expected = SafetensorsFile.Open(Golden.Expected("text_only"));
        Assert.Equal(Golden.Ids(expected, "decode.greedy_ids"), JsonDocument.Parse(output).RootElement.GetProperty("output_token_ids").EnumerateArray().Select(e => e.GetInt64()));

        using var client = await CobraChatClient.LoadAsync(new CobraModelOptions { CacheDirectory = cache, Device = "cpu" });
        Assert.Equal("on ld not\u001a\u001a\u001anaknaknakand\ufffdimalshishothot", (await client.GetResponseAsync("Write a short story about a cobra.", new ChatOptions { MaxOutputTokens = 16 })).Text);

        Environment.SetEnvironmentVariable("HF_HUB_OFFLINE", "1");
        var missing = await Run("generate", "--cache-dir", Path.Combine(scratch, "empty-cache"), "--prompt", "x");
        Environment.SetEnvironmentVariable("HF_HUB_OFFLINE", null);
        Assert.Equal(1, missing.Exit);
        Assert.Contains("han1997/cobra/cobra+3b/config.json", missing.Err, StringComparison.Ordinal);
        Assert.Contains("Hugging Face cache", missing.Err, StringComparison.Ordinal);
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

    [Theory]
    [InlineData("img_scene", "scene_100x70.png", "What is going on in this image?")]
    [InlineData("img_rgba", "badge_64x64_rgba.png", "<image>\nIs there a red circle? Answer Yes or No.")]
    public async Task Image_cases_reproduce_the_golden_ids_and_logits(string kitCase, string image, string question)
    {
        using var expected = SafetensorsFile.Open(Golden.Expected(kitCase));
        string logitsPath = Path.Combine(scratch, kitCase + ".safetensors");
        var (exit, output, error) = await Run("generate", "--model-dir", Golden.TinyAHub, "--image", Golden.Fixtures("tiny-a", "images", image),
            "--prompt", question, "--max-new-tokens", "16", "--json", "--logits-out", logitsPath);

        Assert.True(exit == 0, error);
        using var json = JsonDocument.Parse(output);
        Assert.Equal(Golden.Ids(expected, "input_ids"), json.RootElement.GetProperty("prompt_token_ids").EnumerateArray().Select(e => e.GetInt64()));
        Assert.Equal(Golden.Ids(expected, "decode.greedy_ids"), json.RootElement.GetProperty("output_token_ids").EnumerateArray().Select(e => e.GetInt64()));
        Assert.Equal(16, json.RootElement.GetProperty("usage").GetProperty("image_tokens").GetInt32());
        using var logits = SafetensorsFile.Open(logitsPath);
        Golden.AssertClose(expected.Read("decode.logits"), logits.Read("step_logits"), "step_logits");
    }

    [Theory]
    [InlineData("not-an-image.png", "not an image at all")]
    [InlineData("empty.jpg", "")]
    public async Task Bad_images_exit_1_with_a_clear_message_and_no_stack_trace(string name, string content)
    {
        string path = Path.Combine(scratch, name);
        await File.WriteAllTextAsync(path, content);
        var (exit, _, error) = await Run("generate", "--model-dir", Golden.TinyAHub, "--image", path, "--prompt", "What is it?");
        Assert.Equal(1, exit);
        Assert.Contains(path, error, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", error, StringComparison.Ordinal);

        var missing = await Run("generate", "--model-dir", Golden.TinyAHub, "--image", Path.Combine(scratch, "missing.png"), "--prompt", "x");
        Assert.Equal(1, missing.Exit);
        Assert.Contains("missing.png", missing.Err, StringComparison.Ordinal);
    }

    public static TheoryData<string> OtherVisionShapes() => ["portrait-gray", "rgba-multi-turn", "square-rgb"];

    [Theory]
    [MemberData(nameof(OtherVisionShapes))]
    public async Task Kits_with_other_vision_sizes_generate_their_own_greedy_ids(string imageKind)
    {
        var vision = new SyntheticVision(
            new Cobra.AI.Modeling.Vision.VitConfig { PatchSize = 7, EmbedDim = 24, Depth = 4, NumHeads = 3, RegTokens = 2, NoEmbedClass = true, InitValues = 1e-5 },
            DinoPretrainGrid: 9,
            new Cobra.AI.Modeling.Vision.VitConfig { PatchSize = 7, EmbedDim = 20, Depth = 3, NumHeads = 5, MlpRatio = 2.5, ClassToken = false },
            ImageSize: 42);
        var config = new MambaConfig { DModel = 32, NLayer = 2, VocabSize = 590 };
        using var kit = SyntheticKit.Create(config, seed: 17, vision: vision);
        string imagePath = Path.Combine(scratch, imageKind + ".png");
        WriteImage(imagePath, imageKind);
        string messages = Path.Combine(scratch, "turns.json");
        await File.WriteAllTextAsync(messages, imageKind == "rgba-multi-turn"
            ? """[{"role": "user", "content": "<image>\nWhat is this?"}, {"role": "assistant", "content": "A badge."}, {"role": "user", "content": "Which colour?"}]"""
            : """[{"role": "user", "content": "Describe the image."}]""");

        var (exit, output, error) = await Run("generate", "--model-dir", kit.Root, "--image", imagePath, "--messages", messages, "--max-new-tokens", "8", "--json");
        Assert.True(exit == 0, error);
        using var json = JsonDocument.Parse(output);
        long[] prompt = json.RootElement.GetProperty("prompt_token_ids").EnumerateArray().Select(e => e.GetInt64()).ToArray();
        long[] generated = json.RootElement.GetProperty("output_token_ids").EnumerateArray().Select(e => e.GetInt64()).ToArray();
        Assert.Equal(36, json.RootElement.GetProperty("usage").GetProperty("image_tokens").GetInt32());

        // Oracle: the full-sequence pass (sequential scan) over [image | prompt | generated] picks the same ids.
        using var scope = torch.NewDisposeScope();
        using var pipeline = Cobra.AI.Generation.CobraPipeline.Load(CobraModelFiles.FromHubMirror(kit.Root), torch.CPU, Precision.Float32);
        var (dino, siglip) = pipeline.PreparePixels(Cobra.AI.Imaging.ImageLoader.LoadFile(imagePath, new Cobra.AI.Imaging.ImageLimits()));
        Assert.Equal(new long[] { 1, 3, 42, 42 }, dino.shape);
        var image = pipeline.Model.EncodeImage(dino, siglip);
        var embeds = pipeline.Model.InputEmbeddings(image, torch.tensor([.. prompt, .. generated[..^1]]).unsqueeze(0));
        using var state = pipeline.Model.LanguageModel.NewState();
        var logits = pipeline.Model.LanguageModel.Forward(embeds, state, allPositions: true, SelectiveScan.Sequential);
        var chosen = logits[0].narrow(0, 36 + prompt.Length - 1, generated.Length).argmax(-1).data<long>().ToArray();
        Assert.Equal(chosen, generated);
    }

    private static void WriteImage(string path, string kind)
    {
        switch (kind)
        {
            case "portrait-gray":
                using (var gray = new SixLabors.ImageSharp.Image<SixLabors.ImageSharp.PixelFormats.L8>(30, 95))
                {
                    for (int y = 0; y < 95; y++) { for (int x = 0; x < 30; x++) { gray[x, y] = new((byte)((x * 7) + (y * 2))); } }
                    SixLabors.ImageSharp.ImageExtensions.SaveAsPng(gray, path);
                }

                break;
            case "rgba-multi-turn":
                using (var rgba = new SixLabors.ImageSharp.Image<SixLabors.ImageSharp.PixelFormats.Rgba32>(50, 50))
                {
                    for (int y = 0; y < 50; y++) { for (int x = 0; x < 50; x++) { rgba[x, y] = new((byte)(x * 5), (byte)(y * 5), 90, (byte)(y < 12 ? 0 : 200)); } }
                    SixLabors.ImageSharp.ImageExtensions.SaveAsPng(rgba, path);
                }

                break;
            default:
                using (var rgb = new SixLabors.ImageSharp.Image<SixLabors.ImageSharp.PixelFormats.Rgb24>(42, 42))
                {
                    for (int y = 0; y < 42; y++) { for (int x = 0; x < 42; x++) { rgb[x, y] = new((byte)(x * 6), 200, (byte)(y * 6)); } }
                    SixLabors.ImageSharp.ImageExtensions.SaveAsPng(rgb, path);
                }

                break;
        }
    }

    public void Dispose() => Directory.Delete(scratch, recursive: true);
}
