// Component tests render Chakra in jsdom, all files at once on a shared 2-core machine: a page's
// first render can take seconds, so waiting for an element (findBy…, waitFor) allows 15 s, not
// Testing Library's default 1 s.
import { configure } from "@testing-library/react";

configure({ asyncUtilTimeout: 15_000 });
