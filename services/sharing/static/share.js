// Share page behaviour: more pages, the preview viewer and "download all".
// Plain DOM code with no dependencies; every request goes to this service.
(function () {
  "use strict";

  var grid = document.getElementById("grid");
  if (!grid) {
    return;
  }
  var viewer = document.getElementById("viewer");
  var viewerImage = document.getElementById("viewer-image");
  var viewerEmpty = document.getElementById("viewer-empty");
  var viewerName = document.getElementById("viewer-name");
  var viewerState = document.getElementById("viewer-state");
  var viewerMeta = document.getElementById("viewer-meta");
  var viewerDownload = document.getElementById("viewer-download");
  var current = -1;
  var lastFocus = null;
  // Kinds with an icon of their own under icons/; any other kind shows other.svg.
  var ICON_KINDS = ["image", "video", "audio", "document"];

  function tiles() {
    return grid.querySelectorAll("li.tile");
  }

  // Build a tile from an item of the JSON API, as the server renders it.
  function buildTile(item) {
    var li = document.createElement("li");
    li.className = "tile state-" + item.state;
    li.dataset.id = item.id;
    li.dataset.name = item.name;
    li.dataset.state = item.state;
    li.dataset.preview = item.preview_url || item.thumbnail_url || "";
    li.dataset.download = item.download_url || "";
    li.dataset.drive = item.offline_drive || "";
    if (item.metadata) {
      li.dataset.meta = JSON.stringify(item.metadata);
    }
    var button = document.createElement("button");
    button.className = "open";
    button.type = "button";
    button.setAttribute("aria-label", "Open " + item.name);
    if (item.thumbnail_url) {
      var img = document.createElement("img");
      img.src = item.thumbnail_url;
      img.alt = "";
      img.loading = "lazy";
      img.decoding = "async";
      button.appendChild(img);
    } else {
      var placeholder = document.createElement("span");
      placeholder.className = "no-thumb";
      var icon = document.createElement("img");
      icon.className = "type-icon";
      icon.alt = "";
      icon.src = grid.dataset.icons + (ICON_KINDS.indexOf(item.kind) >= 0 ? item.kind : "other") + ".svg";
      placeholder.appendChild(icon);
      placeholder.appendChild(document.createTextNode(item.kind));
      button.appendChild(placeholder);
    }
    li.appendChild(button);
    var name = document.createElement("span");
    name.className = "name";
    name.title = item.name;
    name.textContent = item.name;
    li.appendChild(name);
    if (item.state === "offline") {
      var offline = document.createElement("span");
      offline.className = "badge offline";
      offline.textContent = "Original offline — connect drive " + item.offline_drive;
      li.appendChild(offline);
    } else if (item.state === "missing") {
      var missing = document.createElement("span");
      missing.className = "badge missing";
      missing.textContent = "Missing: the file is no longer on its drive";
      li.appendChild(missing);
    } else if (item.download_url) {
      var link = document.createElement("a");
      link.className = "download";
      link.href = item.download_url;
      link.setAttribute("download", "");
      link.textContent = "Download";
      li.appendChild(link);
    }
    return li;
  }

  // Load the next page from the JSON API in place of following the link.
  var more = document.getElementById("more");
  var loading = false;
  function loadMore(event) {
    if (event) {
      event.preventDefault();
    }
    if (loading || !more || !more.dataset.cursor) {
      return Promise.resolve();
    }
    loading = true;
    var url = grid.dataset.api + "?limit=" + encodeURIComponent(grid.dataset.pageSize) +
      "&cursor=" + encodeURIComponent(more.dataset.cursor);
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.json();
      })
      .then(function (page) {
        page.items.forEach(function (item) {
          grid.appendChild(buildTile(item));
        });
        if (page.next_cursor) {
          more.dataset.cursor = page.next_cursor;
          more.href = "?cursor=" + encodeURIComponent(page.next_cursor);
        } else {
          more.parentNode.removeChild(more);
          more = null;
        }
      })
      .catch(function () {
        // Fall back to the server-rendered next page, which shows the reason.
        if (more) {
          window.location.href = more.href;
        }
      })
      .then(function () {
        loading = false;
      });
  }
  if (more) {
    more.addEventListener("click", loadMore);
  }

  function show(index) {
    var all = tiles();
    if (index < 0 || index >= all.length) {
      return;
    }
    current = index;
    var tile = all[index];
    viewerName.textContent = tile.dataset.name;
    if (tile.dataset.preview) {
      viewerImage.src = tile.dataset.preview;
      viewerImage.alt = tile.dataset.name;
      viewerImage.hidden = false;
      viewerEmpty.hidden = true;
    } else {
      viewerImage.removeAttribute("src");
      viewerImage.hidden = true;
      viewerEmpty.hidden = false;
    }
    var state = tile.dataset.state;
    if (state === "offline") {
      viewerState.textContent = "Original offline — connect drive " + tile.dataset.drive;
    } else if (state === "missing") {
      viewerState.textContent = "Missing: the file is no longer on its drive";
    } else {
      viewerState.textContent = "";
    }
    while (viewerMeta.firstChild) {
      viewerMeta.removeChild(viewerMeta.firstChild);
    }
    if (tile.dataset.meta) {
      var meta = JSON.parse(tile.dataset.meta);
      Object.keys(meta).forEach(function (key) {
        if (meta[key] === null || meta[key] === undefined) {
          return;
        }
        var term = document.createElement("dt");
        term.textContent = key.replace("_", " ");
        var value = document.createElement("dd");
        value.textContent = String(meta[key]);
        viewerMeta.appendChild(term);
        viewerMeta.appendChild(value);
      });
    }
    if (tile.dataset.download) {
      viewerDownload.href = tile.dataset.download;
      viewerDownload.hidden = false;
    } else {
      viewerDownload.hidden = true;
    }
    // Near the end of the loaded tiles, fetch the next page for "next".
    if (index >= all.length - 2) {
      loadMore();
    }
  }

  function open(index) {
    lastFocus = document.activeElement;
    viewer.hidden = false;
    document.body.classList.add("viewing");
    show(index);
    document.getElementById("viewer-close").focus();
  }

  function close() {
    viewer.hidden = true;
    document.body.classList.remove("viewing");
    viewerImage.removeAttribute("src");
    current = -1;
    if (lastFocus) {
      lastFocus.focus();
    }
  }

  grid.addEventListener("click", function (event) {
    var button = event.target.closest("button.open");
    if (!button) {
      return;
    }
    var all = Array.prototype.slice.call(tiles());
    open(all.indexOf(button.parentNode));
  });
  document.getElementById("viewer-close").addEventListener("click", close);
  document.getElementById("viewer-prev").addEventListener("click", function () {
    show(current - 1);
  });
  document.getElementById("viewer-next").addEventListener("click", function () {
    show(current + 1);
  });
  document.addEventListener("keydown", function (event) {
    if (viewer.hidden) {
      return;
    }
    if (event.key === "Escape") {
      close();
    } else if (event.key === "ArrowLeft") {
      show(current - 1);
    } else if (event.key === "ArrowRight") {
      show(current + 1);
    } else {
      return;
    }
    event.preventDefault();
  });

  // "Download all": start an export, poll its status, then fetch the zip.
  var downloadAll = document.getElementById("download-all");
  if (downloadAll) {
    var progress = document.getElementById("download-progress");
    var status = document.getElementById("download-status");
    var poll = function (url) {
      fetch(url, { credentials: "same-origin" })
        .then(function (response) {
          return response.json().then(function (body) {
            return { ok: response.ok, body: body };
          });
        })
        .then(function (result) {
          var body = result.body;
          if (!result.ok) {
            status.textContent = body.error ? body.error.message : "The download failed.";
            downloadAll.disabled = false;
            return;
          }
          if (body.files_total) {
            progress.value = Math.round((100 * body.files_done) / body.files_total);
          }
          if (body.status === "succeeded") {
            progress.value = 100;
            status.textContent = "Ready.";
            downloadAll.disabled = false;
            window.location.href = body.archive_url;
          } else if (body.status === "waiting") {
            status.textContent = "Waiting for drive " + body.waiting_for.join(", ") + " to be connected.";
            window.setTimeout(poll, 1000, url);
          } else if (body.status === "queued" || body.status === "running") {
            status.textContent = "Preparing: " + body.files_done + " of " + body.files_total + " files.";
            window.setTimeout(poll, 1000, url);
          } else {
            status.textContent = "The download " + body.status + ". Try again.";
            downloadAll.disabled = false;
          }
        })
        .catch(function () {
          status.textContent = "The download status could not be read. Try again.";
          downloadAll.disabled = false;
        });
    };
    downloadAll.addEventListener("click", function () {
      downloadAll.disabled = true;
      progress.hidden = false;
      progress.value = 0;
      status.textContent = "Starting…";
      fetch(downloadAll.dataset.url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ skip_offline: true })
      })
        .then(function (response) {
          return response.json().then(function (body) {
            return { ok: response.ok, body: body };
          });
        })
        .then(function (result) {
          if (!result.ok) {
            status.textContent = result.body.error ? result.body.error.message : "The download failed.";
            downloadAll.disabled = false;
            return;
          }
          poll(result.body.status_url);
        })
        .catch(function () {
          status.textContent = "The download could not be started. Try again.";
          downloadAll.disabled = false;
        });
    });
  }
})();
