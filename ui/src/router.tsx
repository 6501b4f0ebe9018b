// Three pages need no router library: the path is the state, history.pushState changes it, and
// the gateway answers every page path with index.html so deep links and reloads work.
import { useEffect, useState, type AnchorHTMLAttributes, type MouseEvent } from "react";

const listeners = new Set<() => void>();

export function navigate(to: string): void {
  if (to === window.location.pathname) return;
  window.history.pushState(null, "", to);
  listeners.forEach((listener) => listener());
  window.scrollTo({ top: 0 });
}

export function usePath(): string {
  const [path, setPath] = useState(window.location.pathname);
  useEffect(() => {
    const update = () => setPath(window.location.pathname);
    listeners.add(update);
    window.addEventListener("popstate", update);
    return () => {
      listeners.delete(update);
      window.removeEventListener("popstate", update);
    };
  }, []);
  return path;
}

export type Route = { page: "board" } | { page: "task"; id: string } | { page: "agents" } | { page: "missing" };

export function route(path: string): Route {
  if (path === "/" || path === "") return { page: "board" };
  if (path === "/agents") return { page: "agents" };
  const task = /^\/tasks\/([^/]+)\/?$/.exec(path);
  if (task) return { page: "task", id: decodeURIComponent(task[1]) };
  return { page: "missing" };
}

export function Link({ to, onClick, ...props }: AnchorHTMLAttributes<HTMLAnchorElement> & { to: string }) {
  const follow = (event: MouseEvent<HTMLAnchorElement>) => {
    onClick?.(event);
    // Let the browser handle new-tab and download clicks.
    if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    navigate(to);
  };
  return <a href={to} onClick={follow} {...props} />;
}
