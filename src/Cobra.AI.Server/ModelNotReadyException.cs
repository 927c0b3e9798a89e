namespace Cobra.AI.Server;

/// <summary>Thrown by a chat client that is still loading its model; the endpoints answer 503 with Retry-After.</summary>
public sealed class ModelNotReadyException : InvalidOperationException
{
    /// <summary>Creates the exception.</summary>
    public ModelNotReadyException()
        : base("The model is still loading; try again shortly.")
    {
    }

    /// <summary>Creates the exception with a message.</summary>
    /// <param name="message">What is not ready.</param>
    public ModelNotReadyException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and cause.</summary>
    /// <param name="message">What is not ready.</param>
    /// <param name="innerException">The cause.</param>
    public ModelNotReadyException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
