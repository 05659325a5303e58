"use strict";
const $ = (id) => document.getElementById(id);
let settings = null, controls = null, picture = null, reference = null, latest = 0;

const megabytes = (bytes) => String(Math.round(bytes / 1e4) / 100);
const stem = (file) => file.name.replace(/\.[^.]*$/, "");
const checked = (name) => document.querySelector(`input[name=${name}]:checked`).value;

function say(message, isError) {
  $("status").textContent = isError ? "" : message;
  $("error").textContent = isError ? message : "";
  $("error").hidden = !isError;
  if (isError) $("result").hidden = true;
}

async function getJSON(address) {
  const response = await fetch(address);
  const reply = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(reply.error || `the server answered ${response.status} ${response.statusText}`);
  return reply;
}

async function start() {
  settings = await getJSON("api/info");
  for (const name of settings.models) $("model").add(new Option(name, name));
  $("model").disabled = settings.models.length < 2;
  $("limits").textContent = `PNG, JPEG, WebP, GIF, BMP or TIFF, up to ${megabytes(settings.max_upload_bytes)} MB `
    + `and ${settings.max_pixels / 1e6} megapixels. The picture stays in memory on this computer.`;
  await chooseModel();
  document.body.dataset.ready = "yes";
}

// The chosen model's controls come from the server: only what this model takes is shown.
async function chooseModel() {
  const name = $("model").value;
  let offered;
  try {
    offered = await getJSON(`api/model?${new URLSearchParams({model: name})}`);
  } catch (err) {
    controls = null;
    return say(err.message, true);
  }
  if (name !== $("model").value) return;  // another model was chosen meanwhile
  controls = offered;
  $("directions").hidden = !controls.directions.length;
  $("domains").hidden = !controls.domains.length;
  $("domain").replaceChildren(...controls.domains.map((domain) => new Option(domain, domain)));
  $("guides").hidden = controls.guides.length < 2;
  $("num").max = controls.max_outputs;
  $("cap").textContent = `(at most ${controls.max_outputs})`;
  $("attention").hidden = !controls.attention;
  $("faces").hidden = !controls.faces;
  $("note").textContent = controls.note;
  $("note").hidden = !controls.note;
  showGuide();
  translate();
}

function guide() {
  if (!controls || !controls.guides.length) return null;
  return controls.guides.includes(checked("guide")) ? checked("guide") : controls.guides[0];
}

function showGuide() {
  $("latent").hidden = guide() !== "latent";
  $("reference-choice").hidden = guide() !== "reference";
}

// The request for the current choices: its query and body (the reference first, then the picture).
function request() {
  const query = {model: controls.model};
  let body = picture;
  if (controls.directions.length) query.direction = checked("direction");
  if (controls.domains.length) query.domain = $("domain").value;
  if (guide() === "latent") Object.assign(query, {seed: $("seed").value, num: $("num").value});
  if (guide() === "reference") {
    if (!reference) return {error: "choose a reference picture: its style is the one the translation takes"};
    query.reference_bytes = reference.size;
    body = new Blob([reference, picture]);
  }
  if (controls.faces && $("raw").checked) query.raw = "1";
  return {query: new URLSearchParams(query), body};
}

function tooLarge() {
  for (const file of [picture, guide() === "reference" ? reference : null]) {
    if (file && file.size > settings.max_upload_bytes) {
      return `${file.name} is ${megabytes(file.size)} MB: the file is larger than the upload limit `
        + `of ${megabytes(settings.max_upload_bytes)} MB`;
    }
  }
  return null;
}

async function post(query, body) {
  try {
    const response = await fetch(`api/translate?${query}`, {method: "POST", body});
    const reply = await response.json().catch(() => ({}));
    if (!response.ok) return {error: reply.error || `the server answered ${response.status} ${response.statusText}`};
    return reply;
  } catch (err) {
    return {error: `the server could not be reached (${err.message})`};
  }
}

async function translate() {
  if (!picture || !settings || !controls) return;
  const refused = tooLarge();
  if (refused) return say(refused, true);
  const ask = request();
  if (ask.error) return say(ask.error, true);
  const mine = ++latest;
  say(`Translating ${picture.name}…`, false);
  document.body.classList.add("busy");
  const reply = await post(ask.query, ask.body);
  if (mine !== latest) return;
  document.body.classList.remove("busy");
  if (reply.error) return say(reply.error, true);
  show(reply);
}

function made(template) {
  const figure = $(template).content.firstElementChild.cloneNode(true);
  sharpen(figure.querySelector("img"));
  $("result").append(figure);
  return figure;
}

// Every output in its own figure with its download link, its attention map (if any) before it.
function show(reply) {
  $("input").src = reply.input;
  for (const old of document.querySelectorAll("#result .made")) old.remove();
  for (const output of reply.outputs) {
    if (output.heatmap) {
      const map = made("heatmap-figure").querySelector("img");
      Object.assign(map.dataset, {heatmap: output.heatmap, overlay: output.overlay});
    }
    const figure = made("output-figure");
    figure.querySelector("figcaption").textContent = output.caption;
    figure.querySelector("img").src = output.image;
    figure.querySelector("a").href = output.image;
    figure.querySelector("a").download = `${stem(picture)}_${output.tag}.png`;
  }
  showAttention();
  $("result").hidden = false;
  say(`${reply.model}, ${reply.label}: ${reply.width}×${reply.height} px in ${reply.seconds.toFixed(2)} s`, false);
}

function showAttention() {
  for (const map of document.querySelectorAll("#result .heatmap")) {
    map.src = $("over").checked ? map.dataset.overlay : map.dataset.heatmap;
  }
}

// Pictures smaller than their box are enlarged with visible pixels instead of blurred.
function sharpen(img) {
  img.addEventListener("load", () => img.classList.toggle("small", img.naturalWidth < img.clientWidth));
}

function choose(file) {
  if (!file) return;
  picture = file;
  $("file").value = "";
  translate();
}

const drop = $("drop");
sharpen($("input"));
$("file").addEventListener("change", () => choose($("file").files[0]));
$("model").addEventListener("change", chooseModel);
for (const id of ["domain", "seed", "num", "raw"]) $(id).addEventListener("change", translate);
for (const radio of document.querySelectorAll("input[name=direction]")) radio.addEventListener("change", translate);
for (const radio of document.querySelectorAll("input[name=guide]")) {
  radio.addEventListener("change", () => { showGuide(); translate(); });
}
$("reference").addEventListener("change", () => { reference = $("reference").files[0] || null; translate(); });
$("over").addEventListener("change", showAttention);
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("hover"); });
drop.addEventListener("dragleave", () => drop.classList.remove("hover"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("hover");
  choose(event.dataTransfer.files[0]);
});
drop.addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") { event.preventDefault(); $("file").click(); }
});
start().catch((err) => say(`could not read the server's settings (${err.message})`, true));
