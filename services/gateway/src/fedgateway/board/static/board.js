// fedmq board: draws each chart of the page with uPlot from the page's own JSON
// (<script type="application/json" id="board-charts">, the same answer as
// GET /api/v1/board/jobs/{job_id}/charts). No inline script: the page's CSP forbids it.
// window.fedmqBoard.plots[chartId] is the uPlot instance; its .data is what is drawn.
(function () {
  "use strict";
  var board = (window.fedmqBoard = { plots: {}, charts: {} });

  // uPlot draws x ascending: sort the points by x (stable), and leave out points whose x is
  // not a finite plottable number (the KS curve's first threshold is +inf, stored as 1e300).
  function prepare(chart) {
    var pts = [];
    for (var i = 0; i < chart.x.length; i++) {
      var x = chart.x[i];
      if (x === null || !isFinite(x) || Math.abs(x) >= 1e300) continue;
      pts.push([x, chart.y[i]]);
    }
    pts.sort(function (a, b) { return a[0] - b[0]; });
    return [pts.map(function (p) { return p[0]; }), pts.map(function (p) { return p[1]; })];
  }

  function draw(el, chart) {
    var width = Math.max(el.clientWidth, 260);
    var opts = {
      width: width,
      height: 240,
      scales: { x: { time: false } },
      legend: { show: true },
      axes: [{ label: chart.x_label }, { label: chart.y_label }],
      series: [
        { label: chart.x_label },
        { label: chart.y_label, stroke: "#0b5cad", width: 2, points: { show: chart.x.length <= 60 } },
      ],
    };
    return new uPlot(opts, prepare(chart), el);
  }

  function init() {
    var source = document.getElementById("board-charts");
    if (!source || typeof uPlot === "undefined") return;
    var answer = JSON.parse(source.textContent);
    answer.data.forEach(function (c) { board.charts[c.id] = c; });
    document.querySelectorAll(".plot[data-chart-id]").forEach(function (el) {
      var chart = board.charts[el.getAttribute("data-chart-id")];
      if (!chart) return;
      var plot = draw(el, chart);
      board.plots[chart.id] = plot;
      el.setAttribute("data-points", String(plot.data[0].length));
    });
    var timer = null;
    window.addEventListener("resize", function () {
      clearTimeout(timer);
      timer = setTimeout(function () {
        document.querySelectorAll(".plot[data-chart-id]").forEach(function (el) {
          var plot = board.plots[el.getAttribute("data-chart-id")];
          if (plot) plot.setSize({ width: Math.max(el.clientWidth, 260), height: 240 });
        });
      }, 150);
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
