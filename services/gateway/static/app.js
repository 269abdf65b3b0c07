// Digits: draw or upload a digit and show what the model reads. Plain JS, no build step, no network
// beyond this gateway. The server finds the ink, its polarity and its box, so the pad is sent as drawn.
"use strict";

const API = "/api/predict?model_input=1";
const FEEDBACK_API = "/api/feedback";
const DEBOUNCE_MS = 250;
const UNAVAILABLE = "The service is unavailable. Check the connection and try again in a moment.";

const $ = (id) => document.getElementById(id);
const pad = $("pad");
const ink = pad.getContext("2d");
const seen = $("seen").getContext("2d");
const statusLine = $("status");
const result = $("result");
const bars = [...$("bars").children];
const feedback = $("feedback");
const feedbackStatus = $("feedback-status");
const choices = [...feedback.querySelectorAll("button")];

let hasInk = false;        // anything drawn since the last clear
let showingUpload = false; // the pad shows an uploaded picture, not a drawing
let stroke = null;         // {id, x, y} of the pointer that is drawing
let timer = 0;
let sequence = 0;          // only the newest request may update the page
let inFlight = null;       // AbortController of the newest request
let shown = null;          // the answer on the page: what "Wrong? It is a ..." corrects

// ---- the pad ----------------------------------------------------------------------------------

function clearPad() {
  ink.fillStyle = "#fff";
  ink.fillRect(0, 0, pad.width, pad.height);
  ink.lineWidth = pad.width / 14;
  ink.lineCap = "round";
  ink.lineJoin = "round";
  ink.strokeStyle = ink.fillStyle = "#111";
  hasInk = false;
  showingUpload = false;
}

function point(event) {
  const box = pad.getBoundingClientRect(); // the drawing surface starts inside the border
  return {
    x: (event.clientX - box.left - pad.clientLeft) * (pad.width / pad.clientWidth),
    y: (event.clientY - box.top - pad.clientTop) * (pad.height / pad.clientHeight),
  };
}

function dot({ x, y }) {
  ink.beginPath();
  ink.arc(x, y, ink.lineWidth / 2, 0, 2 * Math.PI);
  ink.fill();
}

pad.addEventListener("pointerdown", (event) => {
  if (!event.isPrimary || event.button > 0) return;
  event.preventDefault();
  if (showingUpload) clearPad();
  pad.setPointerCapture(event.pointerId);
  const p = point(event);
  stroke = { id: event.pointerId, ...p };
  dot(p);
  changed();
});

pad.addEventListener("pointermove", (event) => {
  if (!stroke || event.pointerId !== stroke.id) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  ink.beginPath();
  ink.moveTo(stroke.x, stroke.y);
  for (const e of events.length ? events : [event]) {
    const p = point(e);
    ink.lineTo(p.x, p.y);
    stroke.x = p.x;
    stroke.y = p.y;
  }
  ink.stroke();
  changed();
});

function endStroke(event) {
  if (!stroke || event.pointerId !== stroke.id) return;
  stroke = null;
  clearTimeout(timer);
  predictPad();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

function changed() {
  hasInk = true;
  clearTimeout(timer);
  timer = setTimeout(predictPad, DEBOUNCE_MS);
}

$("clear").addEventListener("click", () => {
  clearTimeout(timer);
  begin();
  settle();
  clearPad();
  showResult(null);
  say("Cleared. Draw a digit, or upload a picture of one.");
});

function predictPad() {
  if (!hasInk || showingUpload) return;
  const mine = begin();
  pad.toBlob((blob) => send(mine, blob, "image/png"), "image/png");
}

// ---- uploads: file picker, drag and drop, paste -----------------------------------------------

function upload(file) {
  if (!file) return;
  clearTimeout(timer);
  preview(file);
  const type = file.type.startsWith("image/") ? file.type : "application/octet-stream";
  send(begin(), file, type, file.name);
}

// Show the picture on the pad (best effort: the server reads formats a browser may not).
function preview(file) {
  clearPad();
  showingUpload = true;
  const url = URL.createObjectURL(file);
  const picture = new Image();
  picture.onload = () => {
    const scale = Math.min(pad.width / picture.width, pad.height / picture.height);
    const w = picture.width * scale, h = picture.height * scale;
    ink.drawImage(picture, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
    URL.revokeObjectURL(url);
  };
  picture.onerror = () => URL.revokeObjectURL(url);
  picture.src = url;
}

$("file").addEventListener("change", (event) => {
  upload(event.target.files[0]);
  event.target.value = ""; // choosing the same file again still uploads it
});

document.addEventListener("dragover", (event) => {
  if (!event.dataTransfer?.types.includes("Files")) return;
  event.preventDefault();
  event.dataTransfer.dropEffect = "copy";
  document.body.classList.add("dropping");
});
document.addEventListener("dragleave", (event) => {
  if (!event.relatedTarget) document.body.classList.remove("dropping");
});
document.addEventListener("drop", (event) => {
  document.body.classList.remove("dropping");
  const file = event.dataTransfer?.files[0];
  if (!file) return;
  event.preventDefault();
  upload(file);
});

document.addEventListener("paste", (event) => {
  const file = [...(event.clipboardData?.files ?? [])].find((f) => f.type.startsWith("image/"));
  if (!file) return;
  event.preventDefault();
  upload(file);
});

// ---- asking the gateway -----------------------------------------------------------------------

// Every request takes a number; only the newest may update the page, and older ones are cancelled.
// #result is aria-busy from the moment a request is due until its answer is shown.
function begin() {
  inFlight?.abort();
  inFlight = null;
  result.setAttribute("aria-busy", "true");
  return ++sequence;
}

function settle() {
  result.setAttribute("aria-busy", "false");
}

async function send(mine, body, type, name) {
  if (mine !== sequence) return;
  if (!body) return settle();
  const controller = (inFlight = new AbortController());
  if (name) say(`Reading ${name}…`);
  let response, answer;
  try {
    response = await fetch(API, {
      method: "POST", body, headers: { "Content-Type": type }, signal: controller.signal,
    });
    answer = await response.json().catch(() => ({}));
  } catch (error) {
    if (mine !== sequence) return; // replaced by a newer request
    showResult(null);
    say(UNAVAILABLE, true);
    settle();
    return;
  }
  if (mine !== sequence) return;
  settle();
  if (response.ok && Array.isArray(answer.probabilities)) {
    showResult(answer);
    say(meaning(answer));
    return;
  }
  showResult(null);
  say(problem(response.status, answer.error), true);
}

function problem(code, message) {
  if (code === 503 || code === 502 || code === 504) return UNAVAILABLE;
  if (code === 413) return `That image is too large${message ? `: ${message}` : "."}`;
  if (message) return message.charAt(0).toUpperCase() + message.slice(1);
  return `Something went wrong (HTTP ${code}).`;
}

// ---- showing the answer -----------------------------------------------------------------------

// The verdict says what the answer means (issue #23). An older gateway sends none: its answer is a digit.
// NOT_A_DIGIT and SEVERAL name no digit: the probabilities are still shown, dimmed, for what the model read.
const NAMES_NO_DIGIT = new Set(["NOT_A_DIGIT", "SEVERAL"]);

function namesDigit(answer) {
  return !NAMES_NO_DIGIT.has(answer.verdict);
}

function meaning(answer) {
  switch (answer.verdict) {
    case "UNSURE":
      return `${cap(a(answer.digit))}, or maybe ${a(answer.runner_up)}.`;
    case "NOT_A_DIGIT":
      return `That doesn't look like a digit. It reads most like ${a(answer.digit)}, but not enough to say so.`;
    case "SEVERAL":
      return `That looks like several digits (${answer.marks}). Draw one digit at a time.`;
    default:
      return `Looks like ${a(answer.digit)} (${percent(answer.confidence)} sure).`;
  }
}

// "a 4", "an 8"
function a(digit) {
  return `${digit === 8 ? "an" : "a"} ${digit}`;
}

function cap(words) {
  return words.charAt(0).toUpperCase() + words.slice(1);
}

function headline(answer) {
  if (answer.verdict === "NOT_A_DIGIT") return "Not a digit";
  if (answer.verdict === "SEVERAL") return `Several digits (${answer.marks})`;
  return `${percent(answer.confidence)} sure`; // unsure too: the status line names the runner-up
}

function showResult(answer) {
  const named = Boolean(answer) && namesDigit(answer);
  result.dataset.verdict = answer?.verdict ?? "";
  $("digit").textContent = named ? String(answer.digit) : "?";
  $("confidence").textContent = answer ? headline(answer) : "\u00a0";
  $("version").textContent = answer ? answer.version : "—";
  bars.forEach((row, digit) => {
    const p = answer ? answer.probabilities[digit] : 0;
    row.querySelector(".fill").style.width = `${(p * 100).toFixed(1)}%`;
    row.querySelector(".pct").textContent = answer ? percent(p) : "–";
    row.classList.toggle("top", named && digit === answer.digit);
  });
  drawSeen(answer?.model_input);
  offerCorrection(answer);
}

function percent(p) {
  return p >= 0.995 || p < 0.005 ? `${Math.round(p * 100)}%` : `${(p * 100).toFixed(1)}%`;
}

// The model's input: 784 grey levels, light ink on dark, row-major.
function drawSeen(values) {
  const image = seen.createImageData(28, 28);
  for (let i = 0; i < 784; i++) {
    const v = values ? values[i] : 0;
    image.data.set([v, v, v, 255], i * 4);
  }
  seen.putImageData(image, 0, 0);
}

// ---- "Wrong? It is a [0-9] / not a digit" -----------------------------------------------------

// Offered under each answer the gateway named (prediction_id); what the page said is not a correction of itself:
// the digit it named, or "not a digit" when it said so. When it named no digit, every digit is a correction.
function offerCorrection(answer) {
  shown = answer?.prediction_id ? answer : null;
  feedback.hidden = !shown;
  choices.forEach((button) => {
    const said = button.dataset.digit === undefined
      ? shown?.verdict === "NOT_A_DIGIT" // the "not a digit" button
      : Boolean(shown) && namesDigit(shown) && button.dataset.digit === String(shown.digit);
    button.disabled = said;
  });
  tell("");
}

choices.forEach((button) => button.addEventListener("click", () => {
  if (!shown) return;
  const truth = button.dataset.digit === undefined ? { not_a_digit: true } : { digit: Number(button.dataset.digit) };
  sendCorrection(shown, truth);
}));

async function sendCorrection(answer, truth) {
  choices.forEach((button) => { button.disabled = true; });
  tell("Sending…");
  let response, reply;
  try {
    response = await fetch(FEEDBACK_API, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ prediction_id: answer.prediction_id, ...truth }),
    });
    reply = await response.json().catch(() => ({}));
  } catch (error) {
    reply = null;
  }
  if (answer !== shown) return; // a newer answer replaced it meanwhile
  if (response?.ok) {
    tell(reply.status === "accepted" ? "Thanks — it is recorded." : "Thanks — an admin will review it.");
    return;
  }
  let message = UNAVAILABLE;
  if (response?.status === 429) {
    const wait = response.headers.get("Retry-After");
    message = `Too many corrections from here; try again${wait ? ` in ${wait} s` : " shortly"}.`;
  } else if (response) {
    // The gateway's own words (an expired answer, one corrected already, a full store), else the status's.
    message = reply.error ? problem(400, reply.error) : problem(response.status);
  }
  // One that may pass later can be sent again; one refused for good (expired, corrected already) cannot.
  if (!response || response.status === 429 || response.status >= 500) offerCorrection(answer);
  tell(message, true);
}

function tell(message, isError = false) {
  feedbackStatus.textContent = message;
  feedbackStatus.classList.toggle("error", isError);
}

function say(message, isError = false) {
  statusLine.textContent = message;
  statusLine.classList.toggle("error", isError);
}

clearPad();
showResult(null);
settle();
