namespace Cobra.AI.Loading;

/// <summary>
/// What a <see cref="RestrictedUnpickler"/> asks its owner whenever a pickle wants to reach outside plain
/// data: naming a global, calling it, or loading a persistent id. The owner decides what is allowed, so the
/// VM itself can never run arbitrary code.
/// </summary>
internal interface IPickleHooks
{
    /// <summary>Resolves a <c>module.name</c> global to a stand-in object, or throws when it is not allowed.</summary>
    object ResolveGlobal(string module, string name);

    /// <summary>Applies a resolved global to arguments (REDUCE and NEWOBJ).</summary>
    object? Invoke(object? callable, object?[] args);

    /// <summary>Turns a persistent id (BINPERSID) into the object it stands for.</summary>
    object? PersistentLoad(object? pid);
}
