using Cobra.AI.Modeling;
using TorchSharp;
using Xunit;

namespace Cobra.AI.Tests;

public sealed class TorchRuntimeTests
{
    [Fact]
    public void Native_backend_loads_and_computes()
    {
        TorchRuntime.EnsureInitialized();
        using var a = torch.arange(6, dtype: torch.float32);
        using var sum = a.sum();
        Assert.Equal(15f, sum.item<float>());
    }
}
