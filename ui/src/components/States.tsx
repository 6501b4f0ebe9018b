import type { ReactNode } from "react";
import type { Connection } from "../stream";

export function Spinner({ className = "size-4" }: { className?: string }) {
  return (
    <svg aria-hidden="true" viewBox="0 0 24 24" className={`${className} motion-safe:animate-spin text-cyan-300`}>
      <circle cx="12" cy="12" r="9" fill="none" stroke="currentColor" strokeOpacity="0.25" strokeWidth="3" />
      <path d="M21 12a9 9 0 0 0-9-9" fill="none" stroke="currentColor" strokeWidth="3" strokeLinecap="round" />
    </svg>
  );
}

export function Loading({ label }: { label: string }) {
  return (
    <div role="status" className="flex items-center gap-3 rounded-xl border border-slate-800 bg-slate-900/60 px-4 py-6 text-slate-300">
      <Spinner />
      <span>{label}</span>
    </div>
  );
}

export function Empty({ title, children }: { title: string; children?: ReactNode }) {
  return (
    <div className="rounded-xl border border-dashed border-slate-700 px-6 py-10 text-center">
      <p className="text-base font-medium text-slate-100">{title}</p>
      {children && <div className="mt-2 text-sm text-slate-300">{children}</div>}
    </div>
  );
}

export function ErrorState({ title, detail, onRetry }: { title: string; detail?: string; onRetry?: () => void }) {
  return (
    <div role="alert" className="rounded-xl border border-rose-500/40 bg-rose-950/40 px-5 py-4">
      <p className="font-medium text-rose-100">{title}</p>
      {detail && <p className="mt-1 text-sm wrap-anywhere text-rose-200">{detail}</p>}
      {onRetry && (
        <button type="button" onClick={onRetry} className="btn-secondary mt-3">
          Try again
        </button>
      )}
    </div>
  );
}

const CONNECTION: Record<Connection, { label: string; className: string }> = {
  connecting: { label: "Connecting…", className: "text-slate-300" },
  live: { label: "Live", className: "text-emerald-300" },
  reconnecting: { label: "Reconnecting…", className: "text-amber-300" },
  ended: { label: "Finished", className: "text-slate-300" },
  failed: { label: "Not live", className: "text-rose-300" },
};

export function ConnectionBadge({ state }: { state: Connection }) {
  const look = CONNECTION[state];
  return (
    <span role="status" aria-live="polite" className={`inline-flex items-center gap-1.5 text-xs ${look.className}`}>
      <span
        aria-hidden="true"
        className={`size-2 rounded-full bg-current ${state === "live" ? "motion-safe:animate-pulse" : ""}`}
      />
      {look.label}
    </span>
  );
}
