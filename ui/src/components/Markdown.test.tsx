import { render } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { Markdown } from "./Markdown";

describe("Markdown", () => {
  it("renders headings, lists and tables, and highlights fenced code", () => {
    const { container } = render(
      <Markdown text={"## Plan\n\n- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```python\ndef hello():\n    return 'hi'\n```"} />,
    );
    expect(container.querySelector("h2")?.textContent).toBe("Plan");
    expect(container.querySelectorAll("li")).toHaveLength(2);
    expect(container.querySelector("table td")?.textContent).toBe("1");
    const code = container.querySelector("pre code")!;
    expect(code.className).toContain("language-python");
    expect(code.querySelector(".hljs-keyword")?.textContent).toBe("def");
    expect(code.querySelector(".hljs-string")?.textContent).toBe("'hi'");
  });

  it("shows raw HTML from an agent as text, never as markup", () => {
    const { container } = render(<Markdown text={'<script>alert(1)</script><img src=x onerror="alert(2)">'} />);
    expect(container.querySelector("script")).toBeNull();
    expect(container.querySelector("img")).toBeNull();
  });

  it("opens links in a new tab without handing over the page", () => {
    const { container } = render(<Markdown text="[docs](https://example.org)" />);
    const link = container.querySelector("a")!;
    expect(link.getAttribute("target")).toBe("_blank");
    expect(link.getAttribute("rel")).toContain("noopener");
  });
});
