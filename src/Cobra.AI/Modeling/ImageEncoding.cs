using Cobra.AI.Modeling.Vision;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Modeling;

/// <summary>
/// One image's trip through the towers and the projector, cut into units of one residual branch of a transformer
/// block (attention, then MLP: ~40 ms each at the real size on 2 cores) and one projector layer (~25-80 ms; the
/// whole projector, ~70 GFLOP, had been one ~170 ms unit), so the engine can interleave it with decode steps (a
/// whole image is ~1.2 TFLOP at the real size: seconds on a CPU). Units run in order: DINOv2 blocks, then SigLIP
/// blocks, then the projector's layers; the same ops in the same order as
/// <see cref="CobraModel.EncodeImage"/>. Holds its activations outside any dispose scope; dispose it to free them.
/// Used on one thread only.
/// </summary>
internal sealed class ImageEncoding : IDisposable
{
    private readonly DinoSigLipEncoder vision;
    private readonly Projection.Projector projector;
    private Tensor? dinoPixels;                                                  // [1,3,S,S] until the DINO tower starts
    private Tensor? siglipPixels;                                                // [1,3,S,S] until the SigLIP tower starts
    private Tensor? hidden;                                                      // [1,prefix+P,D] of the tower running now
    private Tensor? dinoFeatures;                                                // [1,P,Dd] once the DINO tower is done
    private int done;

    /// <summary>Starts an encoding of the two towers' pixels (copied to the model's device; the inputs stay the caller's).</summary>
    public ImageEncoding(CobraModel model, Tensor dinoPixels, Tensor siglipPixels)
    {
        vision = model.Vision ?? throw new InvalidOperationException("This model was loaded without vision towers, so it cannot take images.");
        projector = model.Projector!;
        var device = model.LanguageModel.Device;
        this.dinoPixels = dinoPixels.to(device).DetachFromDisposeScope();
        this.siglipPixels = siglipPixels.to(device).DetachFromDisposeScope();
        UnitCount = (2 * (vision.Dino.FeatureBlockCount + vision.SigLip.FeatureBlockCount)) + projector.LayerCount;
    }

    /// <summary>Units in all: two per feature block of both towers, plus one per projector layer.</summary>
    public int UnitCount { get; }

    /// <summary>Units still to run.</summary>
    public int UnitsLeft => UnitCount - done;

    /// <summary>The image tokens [1, P, d_model] once every unit ran (owned by this object); null before.</summary>
    public Tensor? Result { get; private set; }

    /// <summary>Runs the next unit; returns true when the encoding is complete.</summary>
    public bool Advance()
    {
        ObjectDisposedException.ThrowIf(done < 0, this);
        if (Result is not null)
        {
            return true;
        }

        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        int dinoUnits = 2 * vision.Dino.FeatureBlockCount;
        int siglipUnits = 2 * vision.SigLip.FeatureBlockCount;
        if (done < dinoUnits)
        {
            Replace(ref hidden, RunTowerUnit(vision.Dino, ref dinoPixels, done).DetachFromDisposeScope()); // [1,prefix+P,Dd]
            if (done == dinoUnits - 1)
            {
                dinoFeatures = vision.Dino.TakeFeatures(hidden!).contiguous().DetachFromDisposeScope(); // [1,P,Dd]
                Replace(ref hidden, null);
            }
        }
        else if (done < dinoUnits + siglipUnits)
        {
            Replace(ref hidden, RunTowerUnit(vision.SigLip, ref siglipPixels, done - dinoUnits).DetachFromDisposeScope()); // [1,P,Ds]
        }
        else
        {
            int layer = done - dinoUnits - siglipUnits;
            if (layer == 0)
            {
                var fused = torch.cat([dinoFeatures!, vision.SigLip.TakeFeatures(hidden!)], 2); // [1,P,Dd+Ds]
                Replace(ref dinoFeatures, null);
                Replace(ref hidden, projector.ForwardLayer(0, fused).DetachFromDisposeScope()); // [1,P,4(Dd+Ds)] (fused-gelu-mlp)
            }
            else
            {
                Replace(ref hidden, projector.ForwardLayer(layer, hidden!).DetachFromDisposeScope()); // [1,P,D]
            }

            if (layer == projector.LayerCount - 1)
            {
                Result = hidden;                                                 // [1,P,D]
                hidden = null;
            }
        }

        done++;
        return Result is not null;
    }

    /// <summary>Frees the activations and the result.</summary>
    public void Dispose()
    {
        Replace(ref dinoPixels, null);
        Replace(ref siglipPixels, null);
        Replace(ref hidden, null);
        Replace(ref dinoFeatures, null);
        Result?.Dispose();
        Result = null;
        done = -1;
    }

    /// <summary>Unit <paramref name="unit"/> of a tower (block unit / 2, branch unit % 2); unit 0 first embeds the tower's pixels (and frees them).</summary>
    private Tensor RunTowerUnit(VisionTransformer tower, ref Tensor? pixels, int unit)
    {
        if (unit == 0)
        {
            var input = tower.BeginFeatures(pixels!);                            // [1,prefix+P,D]
            Replace(ref pixels, null);
            return tower.RunBlockHalf(0, 0, input);
        }

        return tower.RunBlockHalf(unit / 2, unit % 2, hidden!);
    }

    private static void Replace(ref Tensor? slot, Tensor? value)
    {
        slot?.Dispose();
        slot = value;
    }
}
