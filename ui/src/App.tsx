import { useAuth } from "./auth";
import { Header } from "./components/Header";
import { KeySwitchDialog } from "./components/KeySwitch";
import { SignIn } from "./components/SignIn";
import { Empty } from "./components/States";
import { AgentsPage } from "./pages/Agents";
import { BoardPage } from "./pages/Board";
import { TaskPage } from "./pages/Task";
import { Link, route, usePath } from "./router";

export function App() {
  const path = usePath();
  const current = route(path);
  const { key, refused } = useAuth();
  return (
    <>
      <Header path={path} signedIn={!!key && !refused} />
      <main id="content" tabIndex={-1} className="mx-auto max-w-6xl px-4 py-6 outline-none sm:py-8">
        {/* Another key is another tenant: its pages start over (their fetches and streams). */}
        {refused ? <SignIn hadKey={!!key} /> : <Page key={key ?? ""} current={current} />}
      </main>
      <KeySwitchDialog />
    </>
  );
}

function Page({ current }: { current: ReturnType<typeof route> }) {
  return (
    <>
      {current.page === "board" && <BoardPage />}
      {current.page === "task" && <TaskPage key={current.id} taskId={current.id} />}
      {current.page === "agents" && <AgentsPage />}
      {current.page === "missing" && (
        <Empty title="Nothing here">
          <Link to="/" className="link">
            Back to the Mission Board
          </Link>
        </Empty>
      )}
    </>
  );
}
