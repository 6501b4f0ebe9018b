import { signOut } from "../auth";
import { Link } from "../router";

const NAV = [
  { to: "/", label: "Mission Board", current: (path: string) => path === "/" || path.startsWith("/tasks/") },
  { to: "/agents", label: "Agent Hub", current: (path: string) => path === "/agents" },
];

export function Header({ path, signedIn = false }: { path: string; signedIn?: boolean }) {
  return (
    <header className="sticky top-0 z-20 border-b border-slate-800 bg-slate-950/90 backdrop-blur">
      <a href="#content" className="sr-only focus:not-sr-only focus:absolute focus:top-2 focus:left-2 focus:rounded-lg focus:bg-cyan-300 focus:px-3 focus:py-1.5 focus:text-slate-950">
        Skip to content
      </a>
      <div className="mx-auto flex h-14 max-w-6xl items-center gap-3 px-4 sm:gap-6">
        <Link to="/" className="flex shrink-0 items-center gap-2 rounded-lg font-semibold tracking-tight focus-visible:ring-2 focus-visible:ring-cyan-400 focus-visible:outline-none">
          <svg aria-hidden="true" viewBox="0 0 32 32" className="size-6">
            <circle cx="16" cy="16" r="12" fill="#22d3ee" />
            <circle cx="16" cy="16" r="5" fill="#0f172a" />
          </svg>
          <span>Aether</span>
        </Link>
        <nav aria-label="Main" className="min-w-0">
          <ul className="flex gap-1">
            {NAV.map((item) => {
              const current = item.current(path);
              return (
                <li key={item.to}>
                  <Link
                    to={item.to}
                    aria-current={current ? "page" : undefined}
                    className={`block rounded-lg px-2.5 py-1.5 text-sm whitespace-nowrap focus-visible:ring-2 focus-visible:ring-cyan-400 focus-visible:outline-none sm:px-3 ${
                      current ? "bg-slate-800 text-white" : "text-slate-300 hover:bg-slate-900 hover:text-white"
                    }`}
                  >
                    {item.label}
                  </Link>
                </li>
              );
            })}
          </ul>
        </nav>
        {signedIn && (
          <button type="button" onClick={signOut} className="ml-auto rounded-lg px-2.5 py-1.5 text-sm text-slate-300 hover:text-white focus-visible:ring-2 focus-visible:ring-cyan-400 focus-visible:outline-none">
            Sign out
          </button>
        )}
      </div>
    </header>
  );
}
