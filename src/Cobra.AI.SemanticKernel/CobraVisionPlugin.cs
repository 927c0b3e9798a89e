using System.ComponentModel;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.SemanticKernel;

namespace Cobra.AI.SemanticKernel;

/// <summary>
/// Semantic Kernel functions over the kernel's keyed <c>cobra</c> <see cref="IChatClient"/>: an agent on any
/// model passes an image reference (data URI, file path under the allowed roots, http(s) URL when enabled, or
/// an id from the image store) and gets back text marked as untrusted image content, or a readable error.
/// </summary>
/// <param name="options">Where images may come from (not modified).</param>
/// <param name="serviceId">Key of the vision <see cref="IChatClient"/> in the kernel's services.</param>
public sealed class CobraVisionPlugin(CobraImageReferenceOptions? options = null, string serviceId = CobraKernelBuilderExtensions.DefaultServiceId)
{
    private readonly CobraImageReferenceOptions settings = options ?? new CobraImageReferenceOptions();

    /// <summary>Describes an image or answers a question about it (including reading its text).</summary>
    /// <param name="kernel">The kernel whose services hold the vision client.</param>
    /// <param name="image">The image reference.</param>
    /// <param name="question">The question; empty for a description.</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    /// <returns>The answer, or a text starting with "Error: ".</returns>
    [KernelFunction(CobraVisionTools.DescribeImageName)]
    [Description("Looks at an image and answers a question about it (describe it, answer a question, or read the text in it). Returns text.")]
    public Task<string> DescribeImageAsync(
        Kernel kernel,
        [Description("The image: a data: URI, a file path, an http(s) URL, or an image id from the conversation.")] string image,
        [Description("What to ask about the image; empty to get a description.")] string? question = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        var vision = kernel.Services.GetKeyedService<IChatClient>(serviceId);
        return vision is null
            ? Task.FromResult($"{CobraVisionTools.ErrorPrefix}no vision chat client is registered under the key '{serviceId}'.")
            : CobraVisionTools.DescribeImageAsync(vision, settings, image, question, cancellationToken);
    }
}
