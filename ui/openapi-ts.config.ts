// The web UI's API client, generated from the Patient ML API's OpenAPI document (ui/openapi.json,
// written from the FastAPI app by include/write_openapi.py): the types, one SDK function per
// operation, and TanStack Query options and mutations. `make ui-client` regenerates both;
// tests/ui/test_generated_client.py fails when either is stale. Never edit src/client by hand.
//
// PATIENT_ML_OPENAPI / PATIENT_ML_CLIENT_OUT: another document and folder (the staleness test
// generates into a temporary folder and compares).
import { defineConfig } from "@hey-api/openapi-ts";

export default defineConfig({
  input: process.env.PATIENT_ML_OPENAPI ?? "./openapi.json",
  output: { path: process.env.PATIENT_ML_CLIENT_OUT ?? "./src/client", postProcess: [] },
  plugins: ["@hey-api/client-fetch", "@hey-api/typescript", "@hey-api/sdk", "@tanstack/react-query"],
  logs: { level: "warn" },
});
