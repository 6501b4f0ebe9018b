/// <reference types="vitest/config" />
import react from "@vitejs/plugin-react";
import tailwindcss from "@tailwindcss/vite";
import { defineConfig } from "vite";

// `npm run dev` serves the board with hot reload and sends /api (REST and the WebSocket streams)
// to the gateway at AETHER_URL; `make up` serves the built board from the gateway itself.
const gateway = process.env.AETHER_URL ?? "http://127.0.0.1:8000";

export default defineConfig({
  plugins: [react(), tailwindcss()],
  server: {
    // The seed's VPS setup reaches the dev server under its own domain name.
    allowedHosts: true,
    proxy: { "/api": { target: gateway, ws: true } },
  },
  build: { outDir: "dist", sourcemap: true, chunkSizeWarningLimit: 1200 },
  test: {
    environment: "happy-dom",
    include: ["src/**/*.test.{ts,tsx}"],
    setupFiles: ["src/test/setup.ts"],
  },
});
