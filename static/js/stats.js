/* Admin statistics charts (Chart.js, served from static/vendor). The numbers come from the
   page's json_script block; the same numbers are in the tables beside each chart. */
(function () {
  "use strict";

  var node = document.getElementById("chart-data");
  if (!node || !window.Chart) {
    return;
  }
  var data = JSON.parse(node.textContent);
  // Okabe-Ito colours, as on the grid image: distinct for colour-blind readers.
  var STATUS_COLOURS = {
    uploaded: "#56b4e9",
    processing: "#0072b2",
    completed: "#009e73",
    failed: "#d55e00",
  };
  var BLUE = "#0b5cad";
  var ORANGE = "#e69f00";

  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.color = "#1b2430";
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.animation = false;

  var integerAxis = { beginAtZero: true, ticks: { precision: 0 } };

  function draw(name, config) {
    var canvas = document.querySelector('[data-chart="' + name + '"]');
    if (canvas) {
      canvas.setAttribute("data-chart-ready", "true");
      return new Chart(canvas, config);
    }
    return null;
  }

  draw("daily", {
    type: "bar",
    data: {
      labels: data.daily.labels.map(function (day) {
        return day.slice(5);
      }),
      datasets: data.daily.series.map(function (series) {
        return {
          label: series.label,
          data: series.data,
          backgroundColor: STATUS_COLOURS[series.key] || BLUE,
        };
      }),
    },
    options: {
      scales: { x: { stacked: true }, y: Object.assign({ stacked: true }, integerAxis) },
      plugins: { legend: { position: "bottom" } },
    },
  });

  draw("timings", {
    type: "bar",
    data: {
      labels: data.timings.labels,
      datasets: [
        { label: "Median", data: data.timings.median, backgroundColor: BLUE },
        { label: "95th percentile", data: data.timings.p95, backgroundColor: ORANGE },
      ],
    },
    options: {
      scales: { y: { beginAtZero: true, title: { display: true, text: "ms" } } },
      plugins: { legend: { position: "bottom" } },
    },
  });

  draw("regions", {
    type: "bar",
    data: {
      labels: data.regions.labels,
      datasets: [{ label: "Images", data: data.regions.data, backgroundColor: BLUE }],
    },
    options: {
      scales: {
        x: { title: { display: true, text: "Regions in the image" } },
        y: integerAxis,
      },
      plugins: { legend: { display: false } },
    },
  });

  draw("classes", {
    type: "bar",
    data: {
      labels: data.classes.labels,
      datasets: [{ label: "Regions", data: data.classes.data, backgroundColor: "#009e73" }],
    },
    options: { indexAxis: "y", scales: { x: integerAxis }, plugins: { legend: { display: false } } },
  });

  draw("failures", {
    type: "bar",
    data: {
      labels: data.failures.labels,
      datasets: [{ label: "Images", data: data.failures.data, backgroundColor: "#d55e00" }],
    },
    options: { indexAxis: "y", scales: { x: integerAxis }, plugins: { legend: { display: false } } },
  });
})();
