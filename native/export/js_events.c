/* The exports' event channel to JavaScript (see js_events.h): each event is a heap copy handed to the
 * threadsafe function, freed once delivered or refused. */
#include "export/js_events.h"
#include "sys/napi_util.h"
#include <stdio.h>
#include <stdlib.h>

struct js_event {
  char kind[16];
  int queue;
  char msg[JS_EVENT_MSG_BYTES];
};

static void deliver(napi_env env, napi_value cb, void *context, void *data) {
  struct js_event *ev = data;
  if (env && cb) {
    napi_value args[3], global, result;
    napi_create_string_utf8(env, ev->kind, NAPI_AUTO_LENGTH, &args[0]);
    args[1] = make_i32(env, ev->queue);
    napi_create_string_utf8(env, ev->msg, NAPI_AUTO_LENGTH, &args[2]);
    napi_get_global(env, &global);
    napi_call_function(env, global, cb, 3, args, &result);
  }
  free(ev);
}

int js_events_open(struct js_events *e, napi_env env, napi_value cb, const char *name) {
  napi_value n;
  e->fn = NULL;
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &n);
  if (napi_create_threadsafe_function(env, cb, NULL, n, 256, 1, NULL, NULL, NULL, deliver, &e->fn) != napi_ok) {
    e->fn = NULL;
    return -1;
  }
  napi_unref_threadsafe_function(env, e->fn);
  return 0;
}

void js_events_post(struct js_events *e, const char *kind, int queue, const char *fmt, ...) {
  if (!e->fn) return;
  struct js_event *ev = malloc(sizeof *ev);
  if (!ev) return;
  snprintf(ev->kind, sizeof ev->kind, "%s", kind);
  ev->queue = queue;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ev->msg, sizeof ev->msg, fmt, ap);
  va_end(ap);
  if (napi_call_threadsafe_function(e->fn, ev, napi_tsfn_nonblocking) != napi_ok) free(ev);
}

void js_events_close(struct js_events *e, napi_env env) {
  if (!e->fn) return;
  if (env) napi_ref_threadsafe_function(env, e->fn);
  napi_release_threadsafe_function(e->fn, napi_tsfn_release);
  e->fn = NULL;
}
