// To decide, live: when the server's event stream says something changed,
// fetch the list again and put it in place, without reloading the page.
// The page works without this script (its Reload link); the list comes
// from the server already escaped, and nothing here builds HTML.
(function () {
  "use strict";
  var list = document.getElementById("decide-list");
  var status = document.getElementById("live-status");
  if (!list || !window.EventSource || !window.fetch || !window.DOMParser) {
    return;
  }
  var say = function (text) {
    if (status) {
      status.textContent = text;
    }
  };
  var busy = false;
  var again = false;
  var refresh = function () {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    fetch(list.getAttribute("data-list"), {
      credentials: "same-origin",
      redirect: "error",
      headers: { Accept: "text/html" }
    })
      .then(function (r) {
        if (!r.ok) {
          throw new Error("status " + r.status);
        }
        return r.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        list.replaceChildren.apply(list, Array.prototype.slice.call(doc.body.childNodes));
        say("Live: new requests appear here by themselves.");
      })
      .catch(function () {
        say("Live updates paused: reload to see the latest.");
      })
      .finally(function () {
        busy = false;
        if (again) {
          again = false;
          refresh();
        }
      });
  };
  var events = new EventSource(list.getAttribute("data-events"));
  events.addEventListener("open", function () {
    // Changes between the page's rendering and this (re)connection were
    // not announced: read the list once now.
    refresh();
  });
  events.addEventListener("change", refresh);
  events.addEventListener("ended", function () {
    events.close();
    say("Your session ended: reload to sign in again.");
  });
  events.addEventListener("error", function () {
    if (events.readyState === EventSource.CLOSED) {
      say("Live updates stopped: reload to see the latest.");
    }
  });
})();
