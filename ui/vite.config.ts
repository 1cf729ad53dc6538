/// <reference types="vitest/config" />
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// Built into the Python package, which serves it at <airflow>/patient-ml-ui/ (relative base:
// also right when Airflow runs under a sub-path).
export default defineConfig({
  base: "./",
  plugins: [react()],
  build: {
    outDir: "../plugins/patient_ml/ui/static",
    emptyOutDir: true,
    chunkSizeWarningLimit: 2000,
  },
  test: {
    environment: "jsdom",
    include: ["src/**/*.test.{ts,tsx}"],
    setupFiles: ["src/testSetup.ts"],
    // Component tests render Chakra in jsdom: seconds each on a loaded 2-core machine.
    testTimeout: 90000,
  },
});
