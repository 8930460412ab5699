#!/usr/bin/env bash
# Creates the platform's Kafka topics, for compose (the `kafka-init` service) and Kubernetes (the
# `kafka-topics` Job). It reads the same list the native stack creates, deploy/local/kafka/topics.txt
# (`name partitions` a line, `#` comments), mounted at $TOPICS_FILE, so the three deployments cannot
# drift apart. Auto-creation is off on every broker: a topic missing here fails loudly.
#
#   KAFKA_BOOTSTRAP   the broker (kafka:9092)
#   TOPICS_FILE       the list (/etc/pizza/topics.txt)
set -euo pipefail

bootstrap=${KAFKA_BOOTSTRAP:-kafka:9092}
topics=${TOPICS_FILE:-/etc/pizza/topics.txt}
kt=/opt/kafka/bin/kafka-topics.sh

# Ready means a metadata round trip answers, not that the port is open.
for attempt in $(seq 1 60); do
  if "$kt" --bootstrap-server "$bootstrap" --list >/dev/null 2>&1; then
    break
  fi
  [ "$attempt" -lt 60 ] || { echo "kafka at $bootstrap did not answer within 120s" >&2; exit 1; }
  sleep 2
done

created=0
while read -r name partitions _; do
  case "$name" in '' | '#'*) continue ;; esac
  "$kt" --bootstrap-server "$bootstrap" --create --if-not-exists \
    --topic "$name" --partitions "$partitions" --replication-factor 1
  created=$((created + 1))
done <"$topics"
echo "$created topics present on $bootstrap"
