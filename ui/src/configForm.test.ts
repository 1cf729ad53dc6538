import { describe, expect, it } from "vitest";

import { errorsByField, TEMPLATES, toBody, toFormValues } from "./configForm";

describe("config form", () => {
  it("turns a config into form values and back", () => {
    const values = toFormValues("model", { ...TEMPLATES.model, name: "m", datasetId: "d" });
    expect(values.name).toBe("m");
    expect(JSON.parse(values.trainingApproach)).toEqual(TEMPLATES.model.trainingApproach);
    const { body, errors } = toBody("model", values);
    expect(errors).toEqual([]);
    expect(body).toMatchObject({ name: "m", datasetId: "d", deployApproach: TEMPLATES.model.deployApproach });
  });

  it("names the field whose JSON does not parse, and sends nothing", () => {
    const values = toFormValues("dataset", TEMPLATES.dataset);
    values.curation = "{ splitRatios: ";
    const { body, errors } = toBody("dataset", values);
    expect(body).toBeUndefined();
    expect(errors).toHaveLength(1);
    expect(errors[0].field).toBe("curation");
  });

  it("puts the API's field errors next to the form field they are about", () => {
    const grouped = errorsByField("model", [
      { field: "trainingApproach.maxTrials", message: "must be at least 1" },
      { field: "name", message: "is taken" },
      { field: "searchSpace[0]", message: "elsewhere" },
    ]);
    expect(grouped.trainingApproach[0].message).toBe("must be at least 1");
    expect(grouped.name[0].message).toBe("is taken");
    expect(grouped[""][0].field).toBe("searchSpace[0]");
  });
});
