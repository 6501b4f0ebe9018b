import { useId, useState, type FormEvent } from "react";
import { ApiError, checkApiKey } from "../api";
import { setApiKey } from "../auth";
import { Spinner } from "./States";

/** Asks for an API key when the gateway refused the call (or there is none yet). */
export function SignIn({ hadKey }: { hadKey: boolean }) {
  const [key, setKey] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(hadKey ? "The gateway no longer accepts the key this browser had." : null);
  const fieldId = useId();
  const hintId = useId();

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    const candidate = key.trim();
    if (!candidate) {
      setError("Paste an API key first.");
      return;
    }
    setBusy(true);
    setError(null);
    try {
      await checkApiKey(candidate);
      setApiKey(candidate);
    } catch (caught) {
      setError(caught instanceof ApiError && caught.status === 401 ? "The gateway does not accept this key." : String(caught));
    } finally {
      setBusy(false);
    }
  };

  return (
    <form onSubmit={submit} className="mx-auto max-w-md space-y-4 rounded-2xl border border-slate-800 bg-slate-900/70 p-5">
      <h1 className="text-xl font-semibold">Sign in with an API key</h1>
      <p id={hintId} className="text-sm text-slate-300">
        This gateway wants an API key. <code className="text-cyan-100">make up</code> prints a development key (and a link
        that signs you in); it is also in <code className="text-cyan-100">.aether/api-key</code>.
      </p>
      <div>
        <label htmlFor={fieldId} className="block text-sm font-semibold">
          API key
        </label>
        <input
          id={fieldId}
          type="password"
          autoComplete="current-password"
          value={key}
          onChange={(event) => setKey(event.target.value)}
          aria-describedby={hintId}
          aria-invalid={error ? true : undefined}
          className="mt-1 block w-full rounded-xl border border-slate-700 bg-slate-950 px-3 py-2 text-slate-100 focus:border-cyan-400 focus:ring-2 focus:ring-cyan-400/40 focus:outline-none"
        />
      </div>
      {error && (
        <p role="alert" className="text-sm text-rose-300">
          {error}
        </p>
      )}
      <button type="submit" className="btn-primary" disabled={busy}>
        {busy && <Spinner className="size-4" />}
        Sign in
      </button>
    </form>
  );
}
