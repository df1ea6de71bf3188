// The viewer page: send a photo to POST /v1/reconstruct, show the GLB in three.js (with sliders on its
// morph targets), the JSON figures beside it, and every problem document the API returns as a readable
// message.
// document.body.dataset.state tells tests (and curious people) where the page is:
// starting -> ready -> working -> loaded, or error.
import * as THREE from "three";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";

const $ = (id) => document.getElementById(id);
const form = $("form"), input = $("image"), drop = $("drop"), preview = $("preview");
const submit = $("submit"), status = $("status");
const downloads = $("downloads"), downloadGlb = $("download-glb"), downloadObj = $("download-obj");
const morphs = $("morphs");

// What the API's statuses mean for the person at the page; the problem document's own title and
// detail say the particulars.
const HINTS = {
  400: "The file could not be read as an image, or an option was refused.",
  413: "The photo is too large: try a smaller file or fewer pixels.",
  415: "That is not a supported image: use JPEG, PNG, WebP, BMP or TIFF.",
  422: "No usable face: try a photo with one clear, roughly frontal face.",
  503: "The server is busy or its model is still loading.",
};
const TOP_BLENDSHAPES = 5;

let photo = null;       // the File chosen
let lastRequest = null; // {file, texture, mesh} of the shown result, for the OBJ download
let glbUrl = null;

function setState(state, message, isError = false) {
  document.body.dataset.state = state;
  status.textContent = message;
  status.classList.toggle("error", isError);
}

// ---- the 3D view -----------------------------------------------------------------------------

const canvas = $("canvas");
let renderer;
try {
  // preserveDrawingBuffer keeps the last frame readable for screenshots; rendering is on demand anyway.
  renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
} catch (error) {
  setState("error", `This browser cannot show 3D (WebGL is unavailable): ${error.message}`, true);
  throw error;
}
renderer.setPixelRatio(window.devicePixelRatio);
const scene = new THREE.Scene();
scene.background = new THREE.Color(0x20242b);
scene.add(new THREE.HemisphereLight(0xffffff, 0x404040, 2.0));
const key = new THREE.DirectionalLight(0xffffff, 1.5);
key.position.set(0.5, 0.8, 1.0);
scene.add(key);
const camera = new THREE.PerspectiveCamera(30, 1, 0.001, 100);
camera.position.set(0, 0, 0.6);
const controls = new OrbitControls(camera, canvas);
let model = null;

function render() {
  renderer.render(scene, camera);
}

// Render on demand rather than every frame: software WebGL (no GPU) is slow.
controls.addEventListener("change", render);
new ResizeObserver(() => {
  const { clientWidth: width, clientHeight: height } = canvas;
  if (width === 0 || height === 0) return;
  renderer.setSize(width, height, false);
  camera.aspect = width / height;
  camera.updateProjectionMatrix();
  render();
}).observe(canvas);

function showModel(gltf) {
  if (model) {
    scene.remove(model);
    model.traverse((node) => {
      node.geometry?.dispose();
      node.material?.map?.dispose();
      node.material?.dispose();
    });
  }
  model = gltf.scene;
  scene.add(model);
  showMorphs(model);
  // Frame the face whatever its size and place: the mesh is in metres, Y up, facing +Z.
  const box = new THREE.Box3().setFromObject(model);
  const center = box.getCenter(new THREE.Vector3());
  const size = box.getSize(new THREE.Vector3()).length() || 1;
  const distance = size / (2 * Math.tan(THREE.MathUtils.degToRad(camera.fov) / 2));
  camera.near = distance / 100;
  camera.far = distance * 100;
  camera.position.copy(center).add(new THREE.Vector3(0, 0, distance));
  camera.updateProjectionMatrix();
  controls.target.copy(center);
  controls.update();
  render();
}

// ---- the morph targets ---------------------------------------------------------------------------

// Each slider moves the targets its data-targets names, found by name (the GLB's extras.targetNames,
// which GLTFLoader turns into morphTargetDictionary). It starts where the GLB's default weights put them
// (the fitted ones; 0 for mesh=identity), at their mean when it moves two (left and right).
const sliders = [...morphs.querySelectorAll("input[type=range]")].map((input) => ({
  input, output: morphs.querySelector(`output[for="${input.id}"]`), row: input.closest(".morph"),
  names: input.dataset.targets.split(/\s+/),
}));

function morphMeshes(root) {
  const meshes = [];
  root.traverse((node) => node.morphTargetInfluences && node.morphTargetDictionary && meshes.push(node));
  return meshes;
}

function showMorphs(root) {
  const meshes = morphMeshes(root);
  let shown = 0;
  for (const slider of sliders) {
    const mesh = meshes.find((m) => slider.names.every((name) => name in m.morphTargetDictionary));
    slider.row.hidden = !mesh;
    if (!mesh) continue;
    shown += 1;
    const weights = slider.names.map((name) => mesh.morphTargetInfluences[mesh.morphTargetDictionary[name]]);
    slider.input.value = String(weights.reduce((a, b) => a + b, 0) / weights.length);
    slider.output.textContent = Number(slider.input.value).toFixed(2);
  }
  // A GLB without targets (a model store without an expression basis or its names) gets no sliders.
  morphs.hidden = shown === 0;
}

for (const slider of sliders) {
  slider.input.addEventListener("input", () => {
    const weight = Number(slider.input.value);
    slider.output.textContent = weight.toFixed(2);
    // Every face of the GLB (faces=all) that has the targets.
    for (const mesh of model ? morphMeshes(model) : []) {
      for (const name of slider.names) {
        const index = mesh.morphTargetDictionary[name];
        if (index !== undefined) mesh.morphTargetInfluences[index] = weight;
      }
    }
    render();
  });
}

function parseGlb(buffer) {
  return new Promise((resolve, reject) => new GLTFLoader().parse(buffer, "", resolve, reject));
}

// ---- the API ---------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(message, status = null) {
    super(message);
    this.status = status;
  }
}

async function reconstruct(request, format, morphTargets = false) {
  const body = new FormData();
  body.append("image", request.file, request.file.name);
  body.append("format", format);
  body.append("texture", request.texture);
  body.append("mesh", request.mesh);
  body.append("region", request.region);
  if (morphTargets) body.append("morph_targets", "true");
  let response;
  try {
    response = await fetch("v1/reconstruct", { method: "POST", body });
  } catch (error) {
    throw new ApiError(`The server could not be reached (${error.message}).`);
  }
  if (!response.ok) throw new ApiError(await problemMessage(response), response.status);
  return response;
}

// An RFC 9457 problem document gives title and detail; anything else (a proxy's error page, say)
// falls back on the status line.
async function problemMessage(response) {
  let title = `${response.status} ${response.statusText}`.trim();
  let detail = "";
  if ((response.headers.get("content-type") || "").includes("json")) {
    try {
      const problem = await response.json();
      title = problem.title ? `${problem.title} (${response.status})` : title;
      detail = problem.detail || "";
    } catch {
      // not JSON after all: keep the status line
    }
  }
  const lines = [title];
  if (detail) lines.push(detail);
  if (HINTS[response.status]) lines.push(HINTS[response.status]);
  const retryAfter = response.headers.get("retry-after");
  if (retryAfter) lines.push(`Try again in ${retryAfter} s.`);
  return lines.join("\n");
}

// ---- the page --------------------------------------------------------------------------------

function choose(file) {
  if (!file) return;
  photo = file;
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  $("drop-text").textContent = file.name;
  submit.disabled = false;
  setState("ready", "Pick the options, then Reconstruct.");
}

input.addEventListener("change", () => choose(input.files[0]));
// The browser would open a photo dropped anywhere else on the page in place of it.
for (const type of ["dragover", "drop"]) window.addEventListener(type, (event) => event.preventDefault());
drop.addEventListener("dragover", () => drop.classList.add("over"));
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  drop.classList.remove("over");
  choose(event.dataTransfer.files[0]);
});
// The photo may fail to preview (TIFF in most browsers); the server still reads it.
preview.addEventListener("error", () => { preview.hidden = true; });

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!photo) return;
  const request = { file: photo, texture: $("texture").value, mesh: $("mesh").value, region: $("region").value };
  submit.disabled = true;
  setState("working", "Reconstructing…");
  try {
    const glb = await (await animatableGlb(request)).blob();
    showModel(await parseGlb(await glb.arrayBuffer()));
    if (glbUrl) URL.revokeObjectURL(glbUrl);
    glbUrl = URL.createObjectURL(glb);
    downloadGlb.href = glbUrl;
    downloads.hidden = false;
    lastRequest = request;
    setState("working", "Loaded the mesh; fetching the figures…");
    showInfo(await (await reconstruct(request, "json")).json());
    setState("loaded", "Drag to rotate, scroll to zoom, right-drag to pan.");
  } catch (error) {
    const message = error instanceof ApiError ? error.message : `The result could not be shown: ${error.message}`;
    setState("error", message, true);
  } finally {
    submit.disabled = false;
  }
});

// The GLB with its morph targets, for the sliders (and the download). A model store without an expression
// basis (or its names) refuses them with a 400: then the plain GLB, whose own problem (if any) is shown.
async function animatableGlb(request) {
  try {
    return await reconstruct(request, "glb", true);
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 400) throw error;
    return reconstruct(request, "glb");
  }
}

downloadObj.addEventListener("click", async () => {
  if (!lastRequest) return;
  downloadObj.disabled = true;
  try {
    const zip = await (await reconstruct(lastRequest, "obj")).blob();
    const url = URL.createObjectURL(zip);
    const link = Object.assign(document.createElement("a"), { href: url, download: "face.zip" });
    link.click();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (error) {
    setState("error", error.message, true);
  } finally {
    downloadObj.disabled = false;
  }
});

function showInfo(result) {
  const facts = $("facts"), list = $("blendshapes");
  facts.replaceChildren();
  list.replaceChildren();
  const face = result.faces[0];
  const rows = [
    ["model", `${result.model.name} ${result.model.version}`],
    ["faces", String(result.faces.length)],
    ["landmarks", String(face.landmarks68.length)],
    ["yaw / pitch / roll", ["yaw", "pitch", "roll"].map((a) => `${face.pose[a].toFixed(1)}°`).join(" / ")],
    ["texture coverage", `${(100 * face.quality.texture_coverage).toFixed(0)} %`],
    ["server time", `${Object.values(result.timings_ms).reduce((a, b) => a + b, 0).toFixed(0)} ms`],
  ];
  for (const [term, value] of rows) {
    facts.append(Object.assign(document.createElement("dt"), { textContent: term }),
                 Object.assign(document.createElement("dd"), { textContent: value }));
  }
  const weights = Object.entries(face.blendshapes || {}).sort((a, b) => b[1] - a[1]).slice(0, TOP_BLENDSHAPES);
  for (const [name, weight] of weights) {
    list.append(Object.assign(document.createElement("li"), { textContent: `${name}: ${weight.toFixed(2)}` }));
  }
  $("info").hidden = false;
}

render();
setState("ready", "Choose a photo.");
