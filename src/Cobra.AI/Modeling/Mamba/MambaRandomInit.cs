using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Modeling.Mamba;

/// <summary>
/// Fills a Mamba model's uninitialised parameters with reproducible random values of the scale mamba_ssm
/// initialises them to (A in [−16, −1], small Δ, fan-in scaled matrices), for benchmarks and tests that
/// need a real-size or odd-size model without downloading weights.
/// </summary>
internal static class MambaRandomInit
{
    /// <summary>Overwrites every parameter of <paramref name="module"/>.</summary>
    public static void Fill(nn.Module module, long seed)
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var generator = new Generator((ulong)seed);
        foreach (var (name, p) in module.named_parameters())
        {
            Tensor value;
            if (name.EndsWith("A_log", StringComparison.Ordinal))
            {
                value = torch.rand(p.shape, generator: generator).mul_(15).add_(1).log_();   // A in [-16, -1]
            }
            else if (name.EndsWith("norm.weight", StringComparison.Ordinal) || name.EndsWith("norm_f.weight", StringComparison.Ordinal) || name.EndsWith(".D", StringComparison.Ordinal))
            {
                value = torch.rand(p.shape, generator: generator).mul_(0.5).add_(0.75);
            }
            else if (name.EndsWith("dt_proj.bias", StringComparison.Ordinal))
            {
                value = torch.rand(p.shape, generator: generator).mul_(4).sub_(5);           // softplus ≈ 0.007..0.3
            }
            else
            {
                long fanIn = p.shape.Length > 1 ? p.shape.Skip(1).Aggregate(1L, (a, b) => a * b) : p.shape[0];
                value = torch.randn(p.shape, generator: generator).mul_(1.0 / Math.Sqrt(fanIn));
            }

            p.copy_(value);
            scope.DisposeEverything();
        }
    }
}
