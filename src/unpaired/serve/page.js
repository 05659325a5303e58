"use strict";
const $ = (id) => document.getElementById(id);
let settings = null, picture = null, shown = null, latest = 0;

const megabytes = (bytes) => String(Math.round(bytes / 1e4) / 100);

function say(message, isError) {
  $("status").textContent = isError ? "" : message;
  $("error").textContent = isError ? message : "";
  $("error").hidden = !isError;
  if (isError) $("result").hidden = true;
}

async function start() {
  settings = await (await fetch("api/info")).json();
  for (const name of settings.models) $("model").add(new Option(name, name));
  $("model").disabled = settings.models.length < 2;
  $("limits").textContent = `PNG, JPEG, WebP, GIF, BMP or TIFF, up to ${megabytes(settings.max_upload_bytes)} MB `
    + `and ${settings.max_pixels / 1e6} megapixels. The picture stays in memory on this computer.`;
  document.body.dataset.ready = "yes";
}

function choose(file) {
  if (!file) return;
  picture = file;
  $("file").value = "";
  translate();
}

async function post(query) {
  try {
    const response = await fetch(`api/translate?${query}`, {method: "POST", body: picture});
    const reply = await response.json().catch(() => ({}));
    if (!response.ok) return {error: reply.error || `the server answered ${response.status} ${response.statusText}`};
    return reply;
  } catch (err) {
    return {error: `the server could not be reached (${err.message})`};
  }
}

async function translate() {
  if (!picture || !settings) return;
  if (picture.size > settings.max_upload_bytes) {
    return say(`${picture.name} is ${megabytes(picture.size)} MB: the file is larger than the upload limit `
      + `of ${megabytes(settings.max_upload_bytes)} MB`, true);
  }
  const mine = ++latest;
  const direction = document.querySelector("input[name=direction]:checked").value;
  say(`Translating ${picture.name}…`, false);
  document.body.classList.add("busy");
  const reply = await post(new URLSearchParams({model: $("model").value, direction}));
  if (mine !== latest) return;
  document.body.classList.remove("busy");
  if (reply.error) return say(reply.error, true);
  show(reply);
}

function show(reply) {
  shown = reply;
  $("input").src = reply.input;
  $("translation").src = reply.translation;
  showAttention();
  $("download").href = reply.translation;
  $("download").download = `${picture.name.replace(/\.[^.]*$/, "")}_${reply.direction}.png`;
  $("result").hidden = false;
  say(`${reply.model}, ${reply.direction}: ${reply.width}×${reply.height} px in ${reply.seconds.toFixed(2)} s`, false);
}

function showAttention() {
  if (shown) $("heatmap").src = $("over").checked ? shown.overlay : shown.heatmap;
}

const drop = $("drop");
// Pictures smaller than their box are enlarged with visible pixels instead of blurred.
for (const img of document.querySelectorAll("figure img")) {
  img.addEventListener("load", () => img.classList.toggle("small", img.naturalWidth < img.clientWidth));
}
$("file").addEventListener("change", () => choose($("file").files[0]));
$("model").addEventListener("change", translate);
for (const radio of document.querySelectorAll("input[name=direction]")) radio.addEventListener("change", translate);
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
