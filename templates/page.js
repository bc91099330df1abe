// Draws the figures and attention widgets of a page from their JSON blocks. A site page and the PDF draw
// everything at once; the single file (body data-lazy) draws a model x family page only when it is opened,
// so that the file opens fast whatever it holds.
(function () {
  "use strict";
  var templates = {};
  function json(id) { return JSON.parse(document.getElementById(id).textContent); }
  function template(id) {
    if (!(id in templates)) { templates[id] = json(id); }
    return templates[id];
  }
  function drawFigure(div) {
    if (div.getAttribute("data-drawn")) { return; }
    div.setAttribute("data-drawn", "1");
    var spec = json(div.getAttribute("data-spec"));
    if (div.getAttribute("data-template")) { spec.layout.template = template(div.getAttribute("data-template")); }
    Plotly.newPlot(div, spec.data, spec.layout, JSON.parse(div.getAttribute("data-config")));
  }
  function drawWidget(div) {
    if (div.getAttribute("data-drawn")) { return; }
    div.setAttribute("data-drawn", "1");
    CircuitsVis.render(div.id, CircuitsVis.AttentionHeads, json(div.getAttribute("data-props")));
  }
  function draw(root) {
    Array.prototype.forEach.call(root.querySelectorAll(".plotly-graph-div[data-spec]"), drawFigure);
    Array.prototype.forEach.call(root.querySelectorAll(".cv-widget[data-props]"), drawWidget);
  }
  function openTarget() {
    // A link to a folded section (the "what we found" box links to its evidence) opens it, and its page.
    var id = decodeURIComponent(location.hash.slice(1));
    var target = id && document.getElementById(id);
    if (!target || !target.closest) { return; }
    var page = target.closest("details.page");
    var fold = target.querySelector(":scope > details.fold");
    var opened = false;
    if (page && !page.open) { page.open = true; opened = true; }
    if (fold && !fold.open) { fold.open = true; opened = true; }
    if (opened) { target.scrollIntoView(); }
  }
  function resizeIn(root) {
    // Figures drawn while folded took Plotly's default width; fit them to the opened section.
    Array.prototype.forEach.call(root.querySelectorAll(".plotly-graph-div[data-drawn]"), function (div) {
      Plotly.Plots.resize(div);
    });
  }
  window.weekdayCircuits = { draw: draw };
  Array.prototype.forEach.call(document.querySelectorAll("details.fold"), function (fold) {
    fold.addEventListener("toggle", function () { if (fold.open) { draw(fold); resizeIn(fold); } });
  });
  window.addEventListener("hashchange", openTarget);
  if (document.body.getAttribute("data-lazy") !== "1") { draw(document); openTarget(); return; }
  Array.prototype.forEach.call(document.querySelectorAll("details.page"), function (page) {
    page.addEventListener("toggle", function () { if (page.open) { draw(page); } });
  });
  openTarget();
})();
