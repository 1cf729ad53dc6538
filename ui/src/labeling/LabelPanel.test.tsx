// The labelling view as issue 31 found it at 1280×900: the model's hint shown at once (anchoring
// the reader) with no way to hide it, and a 64×64 tile blown up to the whole viewer.

import { ChakraProvider } from "@chakra-ui/react";
import { cleanup, fireEvent, render, screen } from "@testing-library/react";
import { useState } from "react";
import { afterEach, describe, expect, it, vi } from "vitest";

import { system } from "../theme";
import { SHORTCUTS } from "./keyboard";
import { HintBox, Shortcuts } from "./LabelPanel";
import { fitScale, MAX_FIT_SCALE } from "./Viewer";

afterEach(cleanup);

const HINT = {
  runId: "r1",
  predictions: [
    { index: 1, name: "tumor", confidence: 0.93, value: true },
    { index: 0, name: "no tumor", confidence: 0.07, value: false },
  ],
};

function Harness({ onAccept = () => {} }: { onAccept?: () => void }) {
  // The panel's own state: hidden at first.
  const [shown, setShown] = useState(false);
  return <HintBox hint={HINT as never} error={null} segmentation={false} shown={shown} onShow={setShown} onAccept={onAccept} />;
}

describe("the champion's hint", () => {
  it("is hidden until asked for, then shows its labels and can be taken, and hidden again", () => {
    const onAccept = vi.fn();
    render(
      <ChakraProvider value={system}>
        <Harness onAccept={onAccept} />
      </ChakraProvider>,
    );
    expect(screen.queryByText(/tumor: 93.0%/)).toBeNull();
    expect(screen.queryByTestId("accept-hint")).toBeNull();
    expect(screen.getByTestId("hint").textContent).toContain("Hidden so that it does not sway your reading");
    fireEvent.click(screen.getByTestId("toggle-hint"));
    expect(screen.getByText("tumor: 93.0%")).toBeTruthy();
    fireEvent.click(screen.getByTestId("accept-hint"));
    expect(onAccept).toHaveBeenCalledOnce();
    fireEvent.click(screen.getByTestId("toggle-hint"));
    expect(screen.queryByText(/tumor: 93.0%/)).toBeNull();
  });
});

describe("fitting the image", () => {
  it("enlarges a small tile at most MAX_FIT_SCALE times, and shrinks a large image to the box", () => {
    expect(MAX_FIT_SCALE).toBe(4);
    expect(fitScale(900, 560, 64, 64)).toBe(4); // not 8.75: big blocks
    expect(fitScale(900, 560, 512, 512)).toBeCloseTo(560 / 512);
    expect(fitScale(900, 560, 2048, 1024)).toBeCloseTo(900 / 2048);
  });
});

describe("the keyboard shortcuts", () => {
  it("are each a key then its words in one block, not a table whose 2nd column is ~100 px wide", () => {
    render(
      <ChakraProvider value={system}>
        <Shortcuts />
      </ChakraProvider>,
    );
    const list = screen.getByTestId("shortcuts");
    expect(list.querySelector("table")).toBeNull();
    const items = screen.getAllByTestId("shortcut");
    expect(items.map((i) => i.textContent)).toEqual(SHORTCUTS.map(([keys, what]) => keys + what));
  });
});
