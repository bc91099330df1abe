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
    var id = decodeURIComponent(location.hash.slice(1));
    var target = id && document.getElementById(id);
    var page = target && target.closest ? target.closest("details.page") : null;
    if (page && !page.open) { page.open = true; target.scrollIntoView(); }
  }
  window.weekdayCircuits = { draw: draw };
  if (document.body.getAttribute("data-lazy") !== "1") { draw(document); return; }
  Array.prototype.forEach.call(document.querySelectorAll("details.page"), function (page) {
    page.addEventListener("toggle", function () { if (page.open) { draw(page); } });
  });
  window.addEventListener("hashchange", openTarget);
  openTarget();
})();
