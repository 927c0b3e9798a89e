using Xunit;

namespace Cobra.AI.Tests;

/// <summary>Tests that set HF_ENDPOINT / HF_HUB_OFFLINE (process-wide) run one at a time.</summary>
[CollectionDefinition(Name)]
public sealed class HubEnvironment
{
    public const string Name = "Hugging Face environment variables";
}
