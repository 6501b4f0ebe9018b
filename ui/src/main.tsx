import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./App";
import { takeKeyFromUrl } from "./auth";
import "./index.css";

takeKeyFromUrl();
// A link opened in a tab that shows the board already changes only the fragment: no reload.
window.addEventListener("hashchange", takeKeyFromUrl);

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
