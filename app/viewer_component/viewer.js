// The 3D crystal view: a Streamlit component that stays on the page between reruns.
//
// Streamlit sends the scene (app/viewer.py: build_viewer_scene) as JSON in a "streamlit:render"
// message; this script draws it with 3Dmol.js. A new scene redraws the same WebGL viewers (no new
// document, no new WebGL context, 3Dmol.js parsed once), and keeps the user's rotation and zoom when
// the same crystal is drawn again (a distortion, a new colouring). Every string from the scene is set
// as textContent or drawn by 3Dmol as label text on the canvas: nothing becomes HTML or code, and
// colours are used only when they are #rrggbb.
(function () {
  "use strict";
  var TITLE = "Interactive 3D view of the crystal"; // benchmarks/bench_app_browser.VIEWER_TITLE
  var HEX = /^#[0-9A-Fa-f]{6}$/;
  var body = document.body;
  var holder = document.getElementById("viewer");
  var box = document.getElementById("atom-details");
  var titles = document.getElementById("titles");
  var legends = document.getElementById("legends");
  var state = { viewers: null, layout: "", camera: "", renders: 0, pending: null, busy: false, loaded: null, height: 0 };
  var hover = { label: null, pin: null, pinLabel: null, details: null };

  if (window.frameElement) window.frameElement.title = TITLE;

  function send(type, extra) {
    window.parent.postMessage(Object.assign({ isStreamlitMessage: true, type: type }, extra || {}), "*");
  }

  function colour(c) {
    if (!HEX.test(c)) throw new Error("not a #rrggbb colour");
    return c;
  }

  function xyz(p) { return { x: p[0], y: p[1], z: p[2] }; }

  function load3Dmol(url) {
    if (window.$3Dmol) return Promise.resolve();
    if (!state.loaded) {
      state.loaded = new Promise(function (resolve, reject) {
        var tag = document.createElement("script");
        tag.src = url;
        tag.onload = resolve;
        tag.onerror = function () { reject(new Error("could not load 3Dmol.js")); };
        document.head.appendChild(tag);
      });
    }
    return state.loaded;
  }

  // ------------------------------------------------------------------ viewers

  function makeViewers(n, height) {
    holder.textContent = "";
    var el = document.createElement("div");
    el.style.position = "relative";
    el.style.width = "100%";
    el.style.height = height + "px";
    holder.appendChild(el);
    var config = { backgroundColor: "white", antialias: false }; // no antialiasing: software WebGL is slow
    if (n === 1) return [$3Dmol.createViewer(el, config)];
    return $3Dmol.createViewerGrid(el, { rows: 1, cols: n, control_all: true }, config)[0];
  }

  function drawCrystal(v, scene, k) {
    v.addModel(scene.xyz, "xyz");
    scene.views[k].styles.forEach(function (s) {
      v.setStyle({ index: s[0] }, { sphere: { color: colour(s[1]), scale: s[2] } });
    });
    scene.cell.forEach(function (e) {
      v.addCylinder({ start: e[0], end: e[1], radius: 0.04, color: "#555555", fromCap: 1, toCap: 1 });
    });
    scene.axes.forEach(function (a) {
      v.addLabel(a[0], { position: a[1], fontColor: "black", backgroundOpacity: 0.0 });
    });
    scene.labels.forEach(function (l) { v.addLabel(l[0], Object.assign({}, scene.labelStyle, { position: l[1] })); });
    scene.highlightLabels.forEach(function (l) {
      v.addLabel(l[0], Object.assign({}, scene.highlightStyle, { position: l[1] }));
    });
  }

  // Symmetry elements as a few meshes, one per colour (hundreds of separate 3Dmol cylinders and planes
  // took 3Dmol 300 ms to build and as long to draw): axes as thin 8-sided prisms (dashed: screw axes),
  // planes as translucent double-sided polygons, inversion centres as spheres.
  var SIDES = 8, DASH = 0.25, GAP = 0.15;

  function mesh() { return { verts: [], norms: [], faces: [] }; }

  function prism(m, a, b, r) {
    var d = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
    var len = Math.hypot(d[0], d[1], d[2]);
    if (!(len > 0)) return;
    d = [d[0] / len, d[1] / len, d[2] / len];
    var h = Math.abs(d[0]) < 0.9 ? [1, 0, 0] : [0, 1, 0]; // any direction not along the axis
    var u = [d[1] * h[2] - d[2] * h[1], d[2] * h[0] - d[0] * h[2], d[0] * h[1] - d[1] * h[0]];
    var ul = Math.hypot(u[0], u[1], u[2]);
    u = [u[0] / ul, u[1] / ul, u[2] / ul];
    var w = [d[1] * u[2] - d[2] * u[1], d[2] * u[0] - d[0] * u[2], d[0] * u[1] - d[1] * u[0]];
    var base = m.verts.length;
    for (var i = 0; i < SIDES; i++) {
      var t = (2 * Math.PI * i) / SIDES, c = Math.cos(t), s = Math.sin(t);
      var n = { x: u[0] * c + w[0] * s, y: u[1] * c + w[1] * s, z: u[2] * c + w[2] * s };
      m.verts.push({ x: a[0] + r * n.x, y: a[1] + r * n.y, z: a[2] + r * n.z });
      m.verts.push({ x: b[0] + r * n.x, y: b[1] + r * n.y, z: b[2] + r * n.z });
      m.norms.push(n, n);
    }
    for (var k = 0; k < SIDES; k++) {
      var i0 = base + 2 * k, i1 = base + 2 * ((k + 1) % SIDES);
      m.faces.push(i0, i1, i0 + 1, i1, i1 + 1, i0 + 1);
    }
  }

  function axis(m, c) {
    var a = [c[0], c[1], c[2]], b = [c[3], c[4], c[5]], r = c[6];
    if (!c[8]) return prism(m, a, b, r);
    var d = [b[0] - a[0], b[1] - a[1], b[2] - a[2]], len = Math.hypot(d[0], d[1], d[2]);
    for (var s = 0; s < len; s += DASH + GAP) {
      var e = Math.min(len, s + DASH);
      prism(m, [a[0] + (d[0] * s) / len, a[1] + (d[1] * s) / len, a[2] + (d[2] * s) / len],
        [a[0] + (d[0] * e) / len, a[1] + (d[1] * e) / len, a[2] + (d[2] * e) / len], r);
    }
  }

  function polygon(m, pts) {
    var n = pts.length, a = pts[0], b = pts[1], c = pts[2];
    var u = [b[0] - a[0], b[1] - a[1], b[2] - a[2]], w = [c[0] - a[0], c[1] - a[1], c[2] - a[2]];
    var nx = u[1] * w[2] - u[2] * w[1], ny = u[2] * w[0] - u[0] * w[2], nz = u[0] * w[1] - u[1] * w[0];
    var base = m.verts.length;
    for (var side = 0; side < 2; side++) {
      for (var i = 0; i < n; i++) {
        m.verts.push(xyz(pts[i]));
        m.norms.push(side ? { x: -nx, y: -ny, z: -nz } : { x: nx, y: ny, z: nz });
      }
    }
    for (var j = 1; j < n - 1; j++) {
      m.faces.push(base, base + j, base + j + 1);
      m.faces.push(base + n, base + n + j + 1, base + n + j);
    }
  }

  function drawElements(v, d) {
    var colours = d.colours.map(colour), axes = {}, planes = {};
    d.c.forEach(function (c) { axis(axes[c[7]] = axes[c[7]] || mesh(), c); });
    d.p.forEach(function (q) { polygon(planes[q[1]] = planes[q[1]] || mesh(), q[0]); });
    Object.keys(axes).forEach(function (k) {
      var m = axes[k];
      v.addCustom({ vertexArr: m.verts, normalArr: m.norms, faceArr: m.faces, color: colours[k] });
    });
    Object.keys(planes).forEach(function (k) {
      var m = planes[k];
      v.addCustom({ vertexArr: m.verts, normalArr: m.norms, faceArr: m.faces, color: colours[k], opacity: d.opacity });
    });
    d.s.forEach(function (s) { v.addSphere({ center: { x: s[0], y: s[1], z: s[2] }, radius: s[3], color: colours[s[4]] }); });
  }

  // ------------------------------------------------------------------ legends

  function chip(label, c) {
    var span = document.createElement("span");
    span.className = "chip";
    var sw = document.createElement("span");
    sw.className = "sw";
    sw.style.background = colour(c);
    span.appendChild(sw);
    span.appendChild(document.createTextNode(label));
    return span;
  }

  function legendRow(prefix, items) {
    var row = document.createElement("div");
    row.className = "lg";
    if (prefix) row.appendChild(document.createTextNode(prefix));
    items.forEach(function (it) { row.appendChild(chip(it[0], it[1])); });
    return row;
  }

  function drawLegends(scene) {
    titles.textContent = "";
    legends.textContent = "";
    if (scene.views.length > 1) {
      scene.views.forEach(function (view) {
        var t = document.createElement("div");
        t.className = "t";
        t.textContent = view.title;
        titles.appendChild(t);
      });
    }
    var row = document.createElement("div");
    row.className = "row";
    scene.views.forEach(function (view) { row.appendChild(legendRow("", view.legend)); });
    legends.appendChild(row);
    if (scene.elements) {
      var er = document.createElement("div");
      er.className = "row";
      er.appendChild(legendRow("Symmetry elements: ", scene.elements.legend));
      legends.appendChild(er);
    }
  }

  // ------------------------------------------------------------------ atom details (hover, click, table)

  function fixed(v, n) { return v.map(function (x) { return x.toFixed(n); }).join(", "); }

  function addLine(text, cls) {
    var e = document.createElement("div");
    if (cls) e.className = cls;
    e.textContent = text;
    box.appendChild(e);
    return e;
  }

  function show(drawn, atom) {
    var d = hover.details, site = d.parents[drawn], s = d.sites[site], sh = d.shifts[drawn];
    box.textContent = "";
    s[1].forEach(function (t, i) { addLine(t, i === 0 ? "adh" : ""); });
    if (sh[0] || sh[1] || sh[2]) {
      addLine("this copy: cell +[" + sh.join(" ") + "] at (" + fixed([atom.x, atom.y, atom.z], 3) + ") \u00c5");
    }
    if (s[2].length) {
      var bars = addLine("", "adb");
      s[2].forEach(function (w, k) {
        var b = document.createElement("span");
        b.style.height = Math.max(1, Math.round(18 * w)) + "px";
        b.style.background = colour(d.colours[k]);
        b.title = "capsule " + k + ": " + w.toFixed(3);
        bars.appendChild(b);
      });
    }
    box.hidden = false;
    body.setAttribute("data-atom-site", String(site));
    body.setAttribute("data-atom-drawn", String(drawn));
  }

  function hide() {
    box.hidden = true;
    box.textContent = "";
    body.removeAttribute("data-atom-site");
    body.removeAttribute("data-atom-drawn");
  }

  function label(viewer, atom) {
    var d = hover.details;
    var spec = Object.assign({}, d.label, { position: { x: atom.x, y: atom.y, z: atom.z } });
    return [viewer, viewer.addLabel(d.sites[d.parents[atom.index]][0], spec)];
  }

  function unlabel(l) { if (l) l[0].removeLabel(l[1]); return null; }

  function onHover(atom, viewer) {
    hover.label = unlabel(hover.label);
    if (!hover.pin || hover.pin.index !== atom.index) hover.label = label(viewer, atom);
    show(atom.index, atom);
    body.setAttribute("data-atom-event", "hover");
    viewer.render();
  }

  function onUnhover(atom, viewer) {
    hover.label = unlabel(hover.label);
    if (hover.pin) show(hover.pin.index, hover.pin); else hide();
    viewer.render();
  }

  function onClick(atom, viewer) {
    hover.label = unlabel(hover.label);
    hover.pinLabel = unlabel(hover.pinLabel);
    if (hover.pin && hover.pin.index === atom.index) {
      hover.pin = null;
      hide();
      body.removeAttribute("data-atom-pinned");
    } else {
      hover.pin = { index: atom.index, x: atom.x, y: atom.y, z: atom.z };
      hover.pinLabel = label(viewer, atom);
      show(atom.index, atom);
      body.setAttribute("data-atom-pinned", String(hover.details.parents[atom.index]));
      body.setAttribute("data-atom-event", "click");
    }
    viewer.render();
  }

  function onLeave() { // leaving the canvas ends the hover too (3Dmol notices only on a mouse move)
    if (!state.viewers || !hover.details) return;
    state.viewers.forEach(function (v) { v.current_hover = null; });
    hover.label = unlabel(hover.label);
    if (hover.pin) show(hover.pin.index, hover.pin); else hide();
  }
  holder.addEventListener("mouseleave", onLeave);

  function setupDetails(views, d) {
    hover.label = hover.pin = hover.pinLabel = null;
    hover.details = d;
    hide();
    ["data-atom-pinned", "data-atom-event", "data-highlighted-site", "data-atom-details"].forEach(function (a) {
      body.removeAttribute(a);
    });
    if (!d) return;
    views.forEach(function (v) {
      v.setHoverDuration(d.hoverMs);
      v.setHoverable({}, true, onHover, onUnhover);
      v.setClickable({}, true, onClick);
    });
    if (d.highlight >= 0) {
      var first = d.parents.indexOf(d.highlight);
      var a = views[0].getModel().selectedAtoms({ index: first })[0];
      hover.pin = { index: first, x: a.x, y: a.y, z: a.z };
      show(first, hover.pin);
      body.setAttribute("data-highlighted-site", String(d.highlight));
    }
    body.setAttribute("data-atom-details", String(d.sites.length));
  }

  // ------------------------------------------------------------------ one render

  function draw(scene) {
    body.setAttribute("data-viewer-ready", "0");
    body.setAttribute("data-crystal", scene.name);
    var layout = scene.views.length + ":" + scene.height;
    if (!state.viewers || state.layout !== layout) {
      state.viewers = makeViewers(scene.views.length, scene.height);
      state.layout = layout;
      state.camera = "";
    }
    var views = state.viewers;
    window.viewer_sen = views[0]; // for tests and benchmarks (3Dmol's API)
    window.sen_viewers = views;
    var keep = state.camera === scene.camera ? views[0].getView() : null;
    views.forEach(function (v, k) {
      // what the previous scene drew (not clear(): it also draws the empty view, a frame for nothing)
      v.removeAllShapes();
      v.removeAllModels();
      v.removeAllLabels();
      drawCrystal(v, scene, k);
      if (k === 0 && scene.elements) drawElements(v, scene.elements);
    });
    if (keep) {
      views[0].setView(keep); // linked views follow the first
    } else {
      views.forEach(function (v) {
        scene.rotate.forEach(function (r) { v.rotate(r[0], r[1]); });
        v.zoomTo();
        v.zoom(scene.zoom);
      });
    }
    state.camera = scene.camera;
    drawLegends(scene);
    setupDetails(views, scene.details);
    views.forEach(function (v) { v.render(); });
    if (scene.elements) body.setAttribute("data-symmetry-elements", String(scene.elements.n));
    else body.removeAttribute("data-symmetry-elements");
    state.renders += 1;
    body.setAttribute("data-render", Math.round(performance.timeOrigin) + "." + state.renders); // unique per drawing
    body.setAttribute("data-viewer-ready", "1");
    // The legend area has a fixed height, so the frame keeps its size from one scene to the next: a
    // resize would make 3Dmol draw everything once more (300 ms with symmetry elements and software WebGL).
    var height = Math.ceil(document.documentElement.scrollHeight);
    if (height !== state.height) {
      state.height = height;
      send("streamlit:setFrameHeight", { height: height });
    }
  }

  function fail(error) {
    body.setAttribute("data-viewer-ready", "error");
    box.hidden = false;
    box.textContent = "The 3D view could not be drawn: " + (error && error.message ? error.message : error);
  }

  // Scenes arrive faster than a slow machine draws them: draw the newest, skip the ones in between.
  function next() {
    if (state.busy || !state.pending) return;
    var scene = state.pending;
    state.pending = null;
    state.busy = true;
    load3Dmol(scene.js).then(function () { draw(scene); }).catch(fail).then(function () {
      state.busy = false;
      next();
    });
  }

  window.addEventListener("message", function (event) {
    var data = event.data;
    if (event.source !== window.parent || !data || data.type !== "streamlit:render" || !data.args) return;
    if (!data.args.scene) return;
    state.pending = data.args.scene;
    next();
  });
  send("streamlit:componentReady", { apiVersion: 1 });
})();
