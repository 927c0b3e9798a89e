using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Xml.Linq;
using Cobra.AI.Loading;
using Microsoft.Extensions.AI;
using Xunit;
using Xunit.Abstractions;

namespace Cobra.AI.Tests.Packaging;

/// <summary>
/// What a new user does, end to end (slow: a few minutes, most of it packing the tool's libtorch): pack the
/// repository into a temporary folder; build a fresh console app that references only that folder's
/// <c>Cobra.AI</c> and the <c>libtorch-cpu-linux-x64</c> backend and answers about a tiny-kit image through
/// <c>IChatClient</c> and DI with a Generic Host; install the <c>cobra</c> tool from the folder with
/// <c>dotnet tool install --tool-path</c> and run <c>cobra generate</c> on the tiny kit. The packages get a
/// version of their own so that nothing cached from an earlier run is used.
/// </summary>
public sealed class ConsumerPackageTests(ITestOutputHelper log) : IDisposable
{
    private static readonly TimeSpan StepTimeout = TimeSpan.FromMinutes(12);
    private readonly string work = Directory.CreateTempSubdirectory("cobra-consumer-").FullName;
    private readonly string version = "0.0.0-consumer." + DateTime.UtcNow.ToString("yyyyMMddHHmmss", System.Globalization.CultureInfo.InvariantCulture) + "." + Environment.ProcessId;

    [Fact]
    public async Task Packed_library_and_tool_work_in_a_fresh_app_and_a_tool_install()
    {
        if (!OperatingSystem.IsLinux() || !Environment.Is64BitProcess || System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture != System.Runtime.InteropServices.Architecture.X64)
        {
            return;                                                              // the consumer references the linux-x64 CPU backend
        }

        string repo = RepoRoot();
        string feed = Directory.CreateDirectory(Path.Combine(work, "feed")).FullName;
        string configuration = new DirectoryInfo(AppContext.BaseDirectory).Parent!.Name;     // bin/<Configuration>/net10.0

        // 1. Pack what the build already made (no rebuild under the running tests).
        await RunAsync("dotnet", ["pack", Path.Combine(repo, "Cobra.AI.sln"), "-c", configuration, "--no-build", "-o", feed, $"-p:PackageVersion={version}"], repo);
        foreach (var id in new[] { "Cobra.AI", "Cobra.AI.SemanticKernel", "Cobra.AI.Server", "Cobra.Cli" })
        {
            Assert.True(File.Exists(Path.Combine(feed, $"{id}.{version}.nupkg")), $"{id} was not packed");
        }

        WriteIsolation(repo, feed);

        // 2. A fresh console app: Cobra.AI from the folder, the CPU backend, a Generic Host.
        string app = Directory.CreateDirectory(Path.Combine(work, "app")).FullName;
        await File.WriteAllTextAsync(Path.Combine(app, "ConsumerApp.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <ImplicitUsings>enable</ImplicitUsings>
                <Nullable>enable</Nullable>
                <NuGetAudit>false</NuGetAudit>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="Cobra.AI" Version="{version}" />
                <PackageReference Include="libtorch-cpu-linux-x64" Version="{PackageVersion(repo, "libtorch-cpu-linux-x64")}" />
                <PackageReference Include="Microsoft.Extensions.Hosting" Version="{PackageVersion(repo, "Microsoft.Extensions.Hosting")}" />
              </ItemGroup>
            </Project>
            """);
        await File.WriteAllTextAsync(Path.Combine(app, "Program.cs"), """
            using Cobra.AI;
            using Microsoft.Extensions.AI;
            using Microsoft.Extensions.DependencyInjection;
            using Microsoft.Extensions.Hosting;

            var builder = Host.CreateApplicationBuilder();
            builder.Services.AddCobraChatClient(o => { o.ModelPath = Environment.GetEnvironmentVariable("MODEL_DIR"); o.Device = "cpu"; });
            using var host = builder.Build();
            await host.StartAsync();
            var chat = host.Services.GetRequiredService<IChatClient>();
            var image = new DataContent(File.ReadAllBytes(Environment.GetEnvironmentVariable("IMAGE")!), "image/png");
            var reply = await chat.GetResponseAsync([new ChatMessage(ChatRole.User, [image, new TextContent("What is going on in this image?")])], new ChatOptions { MaxOutputTokens = 8 });
            Console.WriteLine("STATE " + host.Services.GetRequiredService<CobraModelReadiness>().State);
            Console.WriteLine("ANSWER " + Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes(reply.Text)));
            await host.StopAsync();
            """);
        string build = await RunAsync("dotnet", ["build", app, "-c", "Release", "--configfile", Path.Combine(work, "NuGet.config")], app);
        Assert.Contains("Marked GLIBCXX_3.4.32 weak", build, StringComparison.Ordinal);   // the package's build assets patched the app's copy
        Assert.True(File.Exists(Path.Combine(app, "bin", "Release", "net10.0", "runtimes", "linux-x64", "native", "libcobra_kernels.so")),
            "the package's native bf16 kernels reach the app (runtimes/linux-x64/native)");
        string scene = Golden.Fixtures("tiny-a", "images", "scene_100x70.png");
        string appOutput = await RunAsync("dotnet", [Path.Combine(app, "bin", "Release", "net10.0", "ConsumerApp.dll")], app,
            ("MODEL_DIR", Golden.TinyAHub), ("IMAGE", scene));

        using var client = await CobraChatClient.LoadAsync(new CobraModelOptions { ModelPath = Golden.TinyAHub, Device = "cpu" });
        var expected = await client.GetResponseAsync(
            [new ChatMessage(ChatRole.User, [new DataContent(await File.ReadAllBytesAsync(scene), "image/png"), new TextContent("What is going on in this image?")])],
            new ChatOptions { MaxOutputTokens = 8 });
        Assert.Contains("STATE Ready", appOutput, StringComparison.Ordinal);
        Assert.Contains("ANSWER " + Convert.ToBase64String(Encoding.UTF8.GetBytes(expected.Text)), appOutput, StringComparison.Ordinal);

        // 3. The tool, installed from the folder, runs the tiny kit.
        string tools = Path.Combine(work, "tools");
        await RunAsync("dotnet", ["tool", "install", "Cobra.Cli", "--tool-path", tools, "--version", version, "--configfile", Path.Combine(work, "NuGet.config")], work,
            ("NUGET_PACKAGES", Path.Combine(work, "tool-packages")));
        Assert.True(Directory.EnumerateFiles(tools, "libcobra_kernels.so", SearchOption.AllDirectories).Any(), "the tool carries the native bf16 kernels");
        string json = await RunAsync(Path.Combine(tools, "cobra"), ["generate", "--model-dir", Golden.TinyAHub, "--image", scene,
            "--prompt", "What is going on in this image?", "--max-new-tokens", "16", "--json"], work);
        using var golden = SafetensorsFile.Open(Golden.Expected("img_scene"));
        using var report = JsonDocument.Parse(json);
        Assert.Equal(Golden.Ids(golden, "decode.greedy_ids"), report.RootElement.GetProperty("output_token_ids").EnumerateArray().Select(e => e.GetInt64()));
    }

    /// <summary>A NuGet.config with the local folder first, then the repository's own sources; no inherited MSBuild files.</summary>
    private void WriteIsolation(string repo, string feed)
    {
        var repoSources = XDocument.Load(Path.Combine(repo, "NuGet.config")).Root?.Element("packageSources")?.Elements("add")
            ?? throw new InvalidDataException("The repository's NuGet.config has no packageSources.");
        var config = new XDocument(new XElement("configuration",
            new XElement("packageSources",
                new XElement("clear"),
                new XElement("add", new XAttribute("key", "cobra-local"), new XAttribute("value", feed)),
                repoSources.Select(s => new XElement(s)))));
        config.Save(Path.Combine(work, "NuGet.config"));
        foreach (var file in new[] { "Directory.Build.props", "Directory.Build.targets", "Directory.Packages.props" })
        {
            File.WriteAllText(Path.Combine(work, file), "<Project />");            // nothing above the temp folder applies
        }
    }

    private static string PackageVersion(string repo, string id) =>
        XDocument.Load(Path.Combine(repo, "Directory.Packages.props")).Descendants("PackageVersion")
            .Single(e => (string?)e.Attribute("Include") == id).Attribute("Version")!.Value;

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Cobra.AI.sln")))
            {
                return dir.FullName;
            }
        }

        throw new DirectoryNotFoundException("Cobra.AI.sln not found above " + AppContext.BaseDirectory);
    }

    /// <summary>Runs a child process with a clean MSBuild environment; returns stdout, fails with both streams.</summary>
    private async Task<string> RunAsync(string file, string[] args, string directory, params (string Name, string Value)[] environment)
    {
        var start = new ProcessStartInfo(file) { WorkingDirectory = directory, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        // The test host inherits MSBuild's variables from `dotnet test`; a child build must not.
        foreach (var name in start.Environment.Keys.Where(k => k.StartsWith("MSBuild", StringComparison.OrdinalIgnoreCase) || k.StartsWith("VSTEST", StringComparison.OrdinalIgnoreCase)).ToList())
        {
            start.Environment.Remove(name);
        }

        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        start.Environment["DOTNET_SKIP_FIRST_TIME_EXPERIENCE"] = "1";
        if (Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host)
        {
            start.Environment["DOTNET_ROOT"] = Path.GetDirectoryName(host);       // the installed tool's apphost finds this runtime
        }

        foreach (var (name, value) in environment)
        {
            start.Environment[name] = value;
        }

        var clock = Stopwatch.StartNew();
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(StepTimeout);
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} {string.Join(' ', args)} ran past {StepTimeout}.");
        }

        string output = await stdout;
        string error = await stderr;
        log.WriteLine($"{file} {string.Join(' ', args)}: exit {process.ExitCode} in {clock.Elapsed.TotalSeconds:F0} s");
        Assert.True(process.ExitCode == 0, $"{file} {string.Join(' ', args)} exited {process.ExitCode}\n{output}\n{error}");
        return output;
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(work, recursive: true);
        }
        catch (IOException)
        {
        }

        // The app's restore put this run's own package versions in the global cache; remove just those.
        string cache = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } packages ? packages
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        foreach (var id in new[] { "cobra.ai", "cobra.ai.server", "cobra.ai.semantickernel", "cobra.cli" })
        {
            string dir = Path.Combine(cache, id, version);
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
    }
}
