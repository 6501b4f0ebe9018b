"""`python -m aether_simulator`: run the OpenAI-compatible LLM simulator."""

import argparse
import os

import uvicorn

from .app import SimConfig, Simulator


def main() -> None:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default=env("AETHER_SIM_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("AETHER_SIM_PORT", "8100")))
    parser.add_argument("--latency-ms", type=float, default=float(env("AETHER_SIM_LATENCY_MS", "0")),
                        help="mean latency of a reply")
    parser.add_argument("--latency-dist", choices=["fixed", "lognormal"],
                        default=env("AETHER_SIM_LATENCY_DIST", "fixed"))
    parser.add_argument("--sigma", type=float, default=float(env("AETHER_SIM_SIGMA", "0.5")),
                        help="log-normal shape")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--structured", choices=["schema", "llama", "json", "text"], default=env("AETHER_SIM_STRUCTURED", "schema"),
                        help="response formats accepted: json_schema and json_object; json_object with a schema (llama-cpp-python); json_object only; neither")
    parser.add_argument("--max-concurrency", type=int, default=int(env("AETHER_SIM_MAX_CONCURRENCY", "0")),
                        help="requests generated at once, the rest queued (0: any; 1: like a local llama.cpp)")
    parser.add_argument("--tokens-per-s", type=float, default=float(env("AETHER_SIM_TOKENS_PER_S", "0")),
                        help="generation speed after the latency (0: instant)")
    parser.add_argument("--no-tools", action="store_true", default=env("AETHER_SIM_TOOLS", "on") == "off",
                        help="refuse requests with tools (a 400), as servers without function calling do")
    args = parser.parse_args()
    app = Simulator(SimConfig(
        args.latency_ms, args.latency_dist, args.sigma, args.seed,
        structured=args.structured, max_concurrency=args.max_concurrency, tokens_per_s=args.tokens_per_s,
        tools=not args.no_tools,
    ))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                http="httptools", loop="uvloop", backlog=4096)


if __name__ == "__main__":
    main()
