// Prints the Khronos glTF validator's report on one GLB file as JSON (tests/test_service_gltf.py).
const fs = require("fs");
const validator = require("gltf-validator");

const bytes = new Uint8Array(fs.readFileSync(process.argv[2]));
validator.validateBytes(bytes, { maxIssues: 100 })
  .then((report) => console.log(JSON.stringify(report)))
  .catch((error) => {
    console.error(error);
    process.exit(1);
  });
