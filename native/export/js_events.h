/* The channel an export's threads tell the control plane (JavaScript) about lifecycle and failures
 * on, never about a successful request: a (kind, queue, message) call of the JS function the export was
 * opened with, made on the main thread through an N-API threadsafe function. Posting never blocks: an
 * event that finds the channel full or closed is dropped. The channel does not keep the process alive
 * on its own (the export's socket or device does that). The vhost-user-blk, VDUSE and ublk exports
 * each keep one. */
#ifndef STOR_JS_EVENTS_H
#define STOR_JS_EVENTS_H
#include <node_api.h>
#include <stdarg.h>

#define JS_EVENT_MSG_BYTES 384

struct js_events {
  napi_threadsafe_function fn; /* NULL: not open, or closed */
};

/* Opens the channel to the JS function cb; name names it in diagnostics. 0, or -1. */
int js_events_open(struct js_events *e, napi_env env, napi_value cb, const char *name);
/* From any thread: posts (kind, queue, the formatted message, cut to JS_EVENT_MSG_BYTES - 1 bytes). */
void js_events_post(struct js_events *e, const char *kind, int queue, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Closes it: events already posted are still delivered (delivering needs nothing of the export). With
 * env (on the main thread), the event loop is held until they are, so a process that stops right after
 * a failure still logs it. */
void js_events_close(struct js_events *e, napi_env env);
#endif
