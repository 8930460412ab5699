# shellcheck shell=bash
# Helpers for the workshop's exercises. Source it from the repository's root:
#
#   source docs/workshop/workshop.sh
#
#   place_order [PIZZA] [QUANTITY]   POST /orders; prints the order id (the trace link goes to stderr)
#   wait_order ORDER [STATUS...]     poll until the order reaches one of STATUS (default: any terminal)
#   order_status ORDER               "<status> <reason>"
#   show_order ORDER                 the order's timeline, one line per entry
#   set_faults SERVICE JSON          PUT a fault plan on order|kitchen|delivery (admin token)
#   clear_faults [SERVICE...]        DELETE the fault plans (default: all three)
#   sql QUERY                        run one SQL query on the shop's database (native or compose)
#   steps ORDER                      the order workflow's step attempts, from PostgreSQL
#   wait_attempts ORDER STEP STATUS N   wait until the step has N attempts with that status
#   outbox_pending ORDER...          the orders' events waiting in each service's outbox, by topic and type
#   outbox_count SCHEMA ORDER...     how many of the orders' events wait in one outbox (orders, kitchen, delivery)
#   wait_outbox SCHEMA N ORDER...    wait until at least N of the orders' events wait in that outbox
#   wait_published ORDER...          wait until no event of the orders waits in any outbox
#   effects ORDER...                 per order: tickets, deliveries, payments, events written, terminal entries
#   pizza_load ARGS...               the load tester (built once per shell)
#   wait_trace ORDER                 wait until Jaeger holds the whole order, then print its tree
#   sampling_summary REPORT_DIR      per order of a load run: was it kept, and is its trace complete
#
# Every wait is bounded (WAIT_SECONDS, default 300) and polls: none assumes how fast the shop runs,
# so the same commands work at the demo's pace and at the faster pace of the workshop's check. Every
# query of the database names the orders it is about: a demo's database holds other orders too.
# Settings come from the same variables as deploy/local/services.sh, with the same defaults. With
# Docker Compose, `export WORKSHOP_COMPOSE=deploy/docker-compose.yml` first: the helpers that read
# PostgreSQL then go through `docker compose exec` (compose publishes no PostgreSQL port).

WORKSHOP_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export DATABASE_URL=${DATABASE_URL:-$("$WORKSHOP_ROOT/deploy/local/infra.sh" database-url)}
export PIZZA_ADMIN_TOKEN=${PIZZA_ADMIN_TOKEN:-pizza-workshop}
export PIZZA_ORDER_URL=http://${PIZZA_ORDER_ADDR:-127.0.0.1:8080}
export PIZZA_KITCHEN_URL=http://${PIZZA_KITCHEN_ADDR:-127.0.0.1:8081}
export PIZZA_DELIVERY_URL=http://${PIZZA_DELIVERY_ADDR:-127.0.0.1:8082}
export PIZZA_JAEGER_URL=${PIZZA_JAEGER_URL:-http://127.0.0.1:16686}
WAIT_SECONDS=${WAIT_SECONDS:-300}

# _psql ARGS...: psql on the shop's database. With WORKSHOP_COMPOSE set to a compose file, through
# `docker compose exec` (compose publishes no PostgreSQL port); otherwise on DATABASE_URL.
_psql() {
  if [ -n "${WORKSHOP_COMPOSE:-}" ]; then
    (cd "$WORKSHOP_ROOT" && docker compose -f "$WORKSHOP_COMPOSE" exec -T postgres psql -U pizza -d pizza "$@")
  else
    psql "$DATABASE_URL" "$@"
  fi
}

sql() { _psql -X -q -P pager=off -c "$1"; }

# _json EXPR: evaluates a Python expression over the JSON document on stdin (bound to `d`).
_json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# _read URL: GET with an unsampled traceparent. The services trust it and record nothing, so polling
# an order adds no traces of its own to the order's picture (pizza-load polls the same way).
_read() {
  local trace span
  trace=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  span=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
  curl -fsS --max-time 5 -H "traceparent: 00-$trace-$span-00" "$1"
}

_service_url() {
  case $1 in
    order) echo "$PIZZA_ORDER_URL" ;;
    kitchen) echo "$PIZZA_KITCHEN_URL" ;;
    delivery) echo "$PIZZA_DELIVERY_URL" ;;
    *)
      echo "unknown service '$1' (order, kitchen or delivery)" >&2
      return 1
      ;;
  esac
}

place_order() {
  local pizza=${1:-margherita} quantity=${2:-1} body answer
  body=$(printf '{"customer":{"name":"Workshop Guest","phone":"+39 055 0000","address":{"street":"1 Oven Lane","postal_code":"50100","city":"Firenze"}},"items":[{"pizza":"%s","quantity":%s}]}' \
    "$pizza" "$quantity")
  answer=$(curl -fsS -X POST "$PIZZA_ORDER_URL/orders" -H 'content-type: application/json' -d "$body") ||
    return 1
  echo "trace: $(_json 'd["links"]["trace"]' <<<"$answer")" >&2
  _json 'd["order_id"]' <<<"$answer"
}

order_status() {
  _read "$PIZZA_ORDER_URL/orders/$1" | _json 'd["status"] + " " + str(d["reason"] or "-")'
}

wait_order() {
  local order=$1 deadline=$((SECONDS + WAIT_SECONDS)) answer status reason
  shift
  local wanted=" ${*:-completed cancelled rejected} "
  while [ "$SECONDS" -lt "$deadline" ]; do
    # While the order service restarts, the request fails: keep polling.
    if answer=$(_read "$PIZZA_ORDER_URL/orders/$order" 2>/dev/null); then
      read -r status reason < <(_json 'd["status"] + " " + str(d["reason"] or "-")' <<<"$answer")
      if [[ $wanted == *" $status "* ]]; then
        echo "order $order: $status (reason: $reason)"
        return 0
      fi
      case $status in
        completed | cancelled | rejected)
          echo "order $order ended $status (reason: $reason) before reaching:$wanted" >&2
          return 1
          ;;
      esac
    fi
    sleep 0.2
  done
  echo "order $order: still not one of:$wanted after $WAIT_SECONDS s" >&2
  return 1
}

show_order() {
  _read "$PIZZA_ORDER_URL/orders/$1" | python3 -c '
import json, sys
d = json.load(sys.stdin)
for t in d["timeline"]:
    progress = "" if t["progress_percent"] is None else " %d%%" % t["progress_percent"]
    print("%3d  %s  %-17s %s%s" % (t["seq"], t["at"], t["status"], t["event"], progress))'
}

set_faults() {
  local url
  url=$(_service_url "$1") || return 1
  curl -fsS -X PUT "$url/admin/faults" -H "authorization: Bearer $PIZZA_ADMIN_TOKEN" \
    -H 'content-type: application/json' -d "$2" >/dev/null && echo "$1: faults $2"
}

clear_faults() {
  local name url names=("$@")
  [ $# -gt 0 ] || names=(order kitchen delivery)
  for name in "${names[@]}"; do
    url=$(_service_url "$name") || return 1
    curl -fsS -X DELETE "$url/admin/faults" -H "authorization: Bearer $PIZZA_ADMIN_TOKEN" >/dev/null &&
      echo "$name: no faults" || return 1
  done
}

steps() {
  local key
  key=$(_keys "$1") || return 1
  _psql -X -q -P pager=off -c "
    select a.step_name as step, a.attempt, a.status, a.error->>'error_type' as error,
           to_char(a.started_at, 'HH24:MI:SS.MS') as started
      from workflow.step_attempts a join orders.orders o on o.run_id = a.run_id
     where o.order_id = $key order by a.id"
}

wait_attempts() {
  local order=$1 step=$2 status=$3 n=$4 deadline=$((SECONDS + WAIT_SECONDS)) found key
  key=$(_keys "$order") || return 1
  while [ "$SECONDS" -lt "$deadline" ]; do
    found=$(_psql -X -q -t -A -c "
      select count(*) from workflow.step_attempts a join orders.orders o on o.run_id = a.run_id
       where o.order_id = $key and a.step_name = '${step//\'/}' and a.status = '${status//\'/}'") ||
      return 1
    if [ "$found" -ge "$n" ]; then
      echo "order $order: $found $status attempt(s) of $step"
      return 0
    fi
    sleep 0.5
  done
  echo "order $order: fewer than $n $status attempts of $step after $WAIT_SECONDS s" >&2
  return 1
}

# _keys ORDER...: the order ids as a quoted SQL list ('a','b'); refuses anything that is not a UUID, so
# the ids can be pasted into SQL safely.
_keys() {
  local id list=""
  [ $# -gt 0 ] || {
    echo "name at least one order id" >&2
    return 1
  }
  for id in "$@"; do
    [[ $id =~ ^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$ ]] || {
      echo "not an order id: '$id'" >&2
      return 1
    }
    list="$list${list:+,}'$id'"
  done
  echo "$list"
}

# The outboxes key every event by its order id (the Kafka record key).
outbox_pending() {
  local keys
  keys=$(_keys "$@") || return 1
  _psql -X -q -P pager=off -c "
    select 'order' as service, topic, event_type, count(*) as pending
      from orders.outbox where published_at is null and message_key in ($keys) group by 1, 2, 3
    union all
    select 'kitchen', topic, event_type, count(*) from kitchen.outbox
     where published_at is null and message_key in ($keys) group by 1, 2, 3
    union all
    select 'delivery', topic, event_type, count(*) from delivery.outbox
     where published_at is null and message_key in ($keys) group by 1, 2, 3
    order by 1, 2, 3"
}

outbox_count() {
  local schema=$1 keys
  shift
  case $schema in
    orders | kitchen | delivery) ;;
    *)
      echo "unknown outbox '$schema' (orders, kitchen or delivery)" >&2
      return 1
      ;;
  esac
  keys=$(_keys "$@") || return 1
  _psql -X -q -t -A -c \
    "select count(*) from $schema.outbox where published_at is null and message_key in ($keys)"
}

wait_outbox() {
  local schema=$1 n=$2 deadline=$((SECONDS + WAIT_SECONDS)) found
  shift 2
  while [ "$SECONDS" -lt "$deadline" ]; do
    found=$(outbox_count "$schema" "$@") || return 1
    if [ "$found" -ge "$n" ]; then
      echo "$schema outbox: $found event(s) of these orders waiting"
      return 0
    fi
    sleep 0.5
  done
  echo "$schema outbox: fewer than $n events of these orders waiting after $WAIT_SECONDS s" >&2
  return 1
}

wait_published() {
  local deadline=$((SECONDS + WAIT_SECONDS)) found schema n
  while [ "$SECONDS" -lt "$deadline" ]; do
    found=0
    for schema in orders kitchen delivery; do
      n=$(outbox_count "$schema" "$@") || return 1
      found=$((found + n))
    done
    if [ "$found" -eq 0 ]; then
      echo "every event of these orders is published"
      return 0
    fi
    sleep 0.5
  done
  echo "$found event(s) of these orders still unpublished after $WAIT_SECONDS s" >&2
  return 1
}

# effects ORDER...: what was done for each order, counted in the services' tables. A completed order
# has exactly one of each (one capture and no refund; a cancelled one a refund too).
effects() {
  local keys
  keys=$(_keys "$@") || return 1
  _psql -X -q -P pager=off -c "
    select o.order_id, o.status,
      (select count(*) from kitchen.tickets t where t.order_id = o.order_id) as tickets,
      (select count(*) from delivery.deliveries d where d.order_id = o.order_id) as deliveries,
      (select count(*) from orders.payments p where p.order_id = o.order_id and p.operation = 'capture')
        as captures,
      (select count(*) from orders.payments p where p.order_id = o.order_id and p.operation = 'refund')
        as refunds,
      (select count(*) from kitchen.outbox k where k.message_key = o.order_id::text
          and k.event_type = 'order-ready') as ready_events,
      (select count(*) from delivery.outbox d where d.message_key = o.order_id::text
          and d.event_type = 'order-completed') as completed_events,
      (select count(*) from orders.timeline l where l.order_id = o.order_id
          and l.status in ('completed', 'cancelled', 'rejected')) as terminal_entries
      from orders.orders o where o.order_id in ($keys) order by o.created_at"
}

pizza_load() {
  if [ -z "${WORKSHOP_PIZZA_LOAD:-}" ]; then
    (cd "$WORKSHOP_ROOT" && cargo build -q -p pizza-load) || return 1
    WORKSHOP_PIZZA_LOAD=${CARGO_TARGET_DIR:-$WORKSHOP_ROOT/target}/debug/pizza-load
  fi
  (cd "$WORKSHOP_ROOT" && "$WORKSHOP_PIZZA_LOAD" "$@")
}

# wait_trace ORDER: spans reach Jaeger a moment after the work. Waits until the run's summary span
# (`workflow.run order-fulfillment`, written when the order ends) is there and the span count has
# stopped growing for two reads in a row, then prints the tree.
wait_trace() {
  local order=$1 deadline=$((SECONDS + WAIT_SECONDS)) tree="" last="" stable=0 count
  while [ "$SECONDS" -lt "$deadline" ]; do
    if tree=$(pizza_load trace "$order" 2>/dev/null) && [[ $tree == *"workflow.run order-fulfillment"* ]]; then
      count=${tree%% spans*}
      if [ "$count" = "$last" ]; then stable=$((stable + 1)); else stable=0; fi
      last=$count
      if [ "$stable" -ge 2 ]; then
        printf '%s\n' "$tree"
        return 0
      fi
    fi
    sleep 1
  done
  printf '%s\n' "$tree"
  echo "the trace of order $order did not settle in Jaeger within $WAIT_SECONDS s" >&2
  return 1
}

sampling_summary() {
  python3 - "$1/orders.json" <<'PY'
import json, sys
orders = json.load(open(sys.argv[1]))["orders"]
kept = complete = stray = 0
for o in orders:
    t = o.get("traces") or {}
    missing = t.get("missing", [])
    root = t.get("spans", 0) > 0 and not any(m.endswith("POST /orders") for m in missing)
    state = "kept   " if root else "dropped"
    if root:
        kept += 1
        complete += bool(t.get("complete"))
    elif t.get("spans", 0) > 0:
        stray += 1
    print("%s %s  %3d spans in %2d traces  %s" % (
        o["state"]["order_id"], state, t.get("spans", 0), t.get("traces", 0),
        "complete" if t.get("complete") else "missing %d span(s)" % len(missing) if root else ""))
print("orders %d: kept %d, kept and complete %d, kept but incomplete %d; dropped with stray spans %d"
      % (len(orders), kept, complete, kept - complete, stray))
PY
}
