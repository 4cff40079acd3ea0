// `npm run build:web`: copy the viewer's libraries from node_modules into the Python package
// (service/web/static/vendor/, git-ignored), so the wheel and the Docker image carry them.
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const vendor = join(dirname(fileURLToPath(import.meta.url)), "static", "vendor");
const files = {
  "@niivue/niivue/dist/index.js": "niivue.js", // one self-contained ES module
  "@niivue/niivue/package.json": "niivue.package.json", // its version and licence (BSD-2-Clause)
  // Swagger UI 5 for /docs: the PyPI bundle (4.15) cannot render the OpenAPI 3.1 schema FastAPI writes.
  "swagger-ui-dist/swagger-ui-bundle.js": "swagger-ui/swagger-ui-bundle.js",
  "swagger-ui-dist/swagger-ui.css": "swagger-ui/swagger-ui.css",
  "swagger-ui-dist/favicon-32x32.png": "swagger-ui/favicon-32x32.png",
  "swagger-ui-dist/LICENSE": "swagger-ui/LICENSE",
  "swagger-ui-dist/NOTICE": "swagger-ui/NOTICE",
};
for (const [from, to] of Object.entries(files)) {
  mkdirSync(dirname(join(vendor, to)), { recursive: true });
  copyFileSync(join("node_modules", from), join(vendor, to));
}
console.log(`web viewer: ${Object.keys(files).length} files copied to ${vendor}`);
