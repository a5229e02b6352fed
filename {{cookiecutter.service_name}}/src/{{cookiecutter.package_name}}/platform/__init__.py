"""The platform: lifecycle, servers, pools, consumer runtime, outbox relay, logs, metrics, settings.

Owned by the template (`make update` brings its fixes); the service's own code lives beside it,
in its feature packages, and meets it in `app.py`'s list of features. The platform never imports
a feature nor the features' generated stubs. What a feature uses:

- `assembly.Feature` / `Assembly`: a feature as app.py lists it, and what its `wire` adds to;
- `lifecycle.Component`: a long-lived part (start, the shutdown phases, close);
- `http_server.Routes` / `HttpRoutes`, `read_json_object`, `json_reply`: HTTP routes, served with
  request ids, in-flight tracking, errors, metrics and the access log; `Routes.stream` for
  WebSocket and SSE, whose handlers get an `http_streams.OpenStream`;
- `grpc_server.GrpcService` / `GrpcServices`: registers a servicer / the RPCs served;
- `consumer.EffectHandler` / `GroupEffectHandler`: what an event does, exactly once;
- `outbox.enqueue`: an event, written in the caller's transaction, published after commit;
- `errors`: the errors handlers raise (each maps to an HTTP status and a gRPC code);
- `settings.SettingsGroup` (a feature's settings), `Settings` and the options' groups
  (`db.PostgresSettings`, ...), `db.PostgresPool`, `redis_client.RedisClient`, `request_id`,
  `logs.log`, `event_context.EventContext`.
"""
