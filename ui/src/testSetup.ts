// Vitest setup: Testing Library's `findBy…`/`waitFor` wait 1 s by default, which a loaded
// 2-core CI machine exceeds while Chakra renders in jsdom (a test failed so at load ≈ 11).
// They still fail, only later, when what they wait for never appears.
import { configure } from "@testing-library/dom";

configure({ asyncUtilTimeout: 15000 });
