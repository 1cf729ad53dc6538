import { describe, expect, it } from "vitest";

import {
  enumOptions,
  errorsByPath,
  labelOf,
  newItem,
  parseLeaf,
  pathText,
  removeAt,
  renderedPaths,
  setAt,
  TEMPLATES,
  toBody,
  toFormState,
} from "./configForm";

describe("config form", () => {
  it("turns a config into form state and back", () => {
    const state = toFormState("model", { ...TEMPLATES.model, name: "m", datasetId: "d" });
    expect(state.config.name).toBe("m");
    expect(state.config.trainingApproach).toEqual(TEMPLATES.model.trainingApproach);
    expect(state.config.trainingApproach).not.toBe(TEMPLATES.model.trainingApproach); // a copy
    const { body, errors } = toBody("model", state);
    expect(errors).toEqual([]);
    expect(body).toMatchObject({ name: "m", datasetId: "d", deployApproach: TEMPLATES.model.deployApproach });
  });

  it("edits nested fields by path without touching the rest", () => {
    const state = toFormState("model", TEMPLATES.model);
    const edited = setAt(state.config, ["trainingApproach", "searchSpace", 0, "max"], 0.5);
    expect((edited.trainingApproach as { searchSpace: { max: number }[] }).searchSpace[0].max).toBe(0.5);
    expect((state.config.trainingApproach as { searchSpace: { max: number }[] }).searchSpace[0].max).toBe(0.1);
    const removed = setAt(edited, ["approvalPolicy", "timeoutHours"], undefined);
    expect(removed.approvalPolicy).toEqual({ approvers: [] });
    const list = removeAt(edited, ["trainingApproach", "searchSpace", 0]);
    expect((list.trainingApproach as { searchSpace: unknown[] }).searchSpace).toEqual([]);
  });

  it("adds list items of the list's kind", () => {
    expect(newItem(["trainingApproach", "searchSpace"], [])).toMatchObject({ type: "continuous", name: "" });
    expect(newItem(["problemDefinition", "labelDefinition", "labels"], [])).toEqual({ name: "", description: "" });
    expect(newItem(["approvalPolicy", "approvers"], [])).toBe("");
    expect(newItem(["x", "values"], [64, 96])).toBe(0);
    expect(newItem(["x", "pairs"], [{ a: "s", b: 2, c: [1] }])).toEqual({ a: "", b: 0, c: [] });
  });

  it("keeps numbers numbers, and sends what does not parse for the API to name", () => {
    expect(parseLeaf("0.25", 1)).toBe(0.25);
    expect(parseLeaf("1e-4", 1)).toBe(0.0001);
    expect(parseLeaf("abc", 1)).toBe("abc");
    expect(parseLeaf("", 1)).toBeUndefined();
    expect(parseLeaf("", "text")).toBe("");
    expect(parseLeaf("7", "text")).toBe("7");
  });

  it("offers the product's values for enumerated fields, in every list item", () => {
    expect(enumOptions(["trainingApproach", "searchSpace", 3, "scale"])).toEqual(["linear", "log"]);
    expect(enumOptions(["deployApproach", "type"])).toEqual(["cloud", "edge"]);
    expect(enumOptions(["deployApproach", "inferenceImage"])).toBeUndefined();
    expect(labelOf("maxTrials")).toBe("Max trials");
  });

  it("names the section whose JSON text does not parse, and sends nothing", () => {
    const state = toFormState("dataset", TEMPLATES.dataset);
    state.json.curation = "{ splitRatios: ";
    const { body, errors } = toBody("dataset", state);
    expect(body).toBeUndefined();
    expect(errors).toHaveLength(1);
    expect(errors[0].field).toBe("curation");
  });

  it("puts each API error next to the exact field it names, or the nearest one shown", () => {
    const state = toFormState("model", TEMPLATES.model);
    const rendered = renderedPaths(state.config);
    expect(rendered.has("trainingApproach.searchSpace[0].min")).toBe(true);
    expect(pathText(["trainingApproach", "searchSpace", 0, "min"])).toBe("trainingApproach.searchSpace[0].min");
    const grouped = errorsByPath(
      [
        { field: "trainingApproach.searchSpace[0].min", message: "must be below max" },
        { field: "trainingApproach.maxTrials", message: "must be at least 1" },
        { field: "trainingApproach.objective.metric", message: "is not a metric" },
        { field: "approvalPolicy.autoApproval.metric", message: "absent from the form" },
        { field: "name", message: "is taken" },
        { field: "(root)", message: "elsewhere" },
      ],
      rendered,
    );
    expect(grouped["trainingApproach.searchSpace[0].min"][0].message).toBe("must be below max");
    expect(grouped["trainingApproach.maxTrials"][0].message).toBe("must be at least 1");
    expect(grouped["trainingApproach.objective.metric"][0].message).toBe("is not a metric");
    expect(grouped.approvalPolicy[0].message).toBe("absent from the form"); // its nearest shown field
    expect(grouped.name[0].message).toBe("is taken");
    expect(grouped[""][0].field).toBe("(root)");
  });
});
