// Draws every chart of a page: a <script type="application/json" data-chart="ID"> holds a
// plotly figure ({data, layout}) for the element ID. No inline script: the CSP forbids it.
"use strict";

function petraDrawCharts() {
  if (typeof Plotly === "undefined") {
    return;
  }
  document.querySelectorAll('script[type="application/json"][data-chart]').forEach((source) => {
    const target = document.getElementById(source.dataset.chart);
    if (!target) {
      return;
    }
    const figure = JSON.parse(source.textContent);
    Plotly.newPlot(target, figure.data, figure.layout, {
      displaylogo: false,
      responsive: true,
    });
  });
}

document.addEventListener("DOMContentLoaded", petraDrawCharts);
