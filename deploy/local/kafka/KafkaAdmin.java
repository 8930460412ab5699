// A tiny admin client for the native stack, run with Java's single-file source launcher
// (`java -cp 'LIB/*' KafkaAdmin.java ...`) so no build step is needed and every call is one JVM start.
//
//   KafkaAdmin.java ready  BOOTSTRAP TIMEOUT_SECS            wait until a metadata request succeeds
//   KafkaAdmin.java topics BOOTSTRAP FILE                    create the topics listed in FILE (idempotent)
//
// FILE holds one topic a line, `name partitions`; blank lines and `#` comments are ignored. Readiness is a
// real client round trip (describeCluster), not a line in the broker's log.
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;

public class KafkaAdmin {
    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: KafkaAdmin (ready BOOTSTRAP TIMEOUT_SECS | topics BOOTSTRAP FILE)");
            System.exit(2);
        }
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[1]);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "3000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "5000");
        try (Admin admin = Admin.create(props)) {
            switch (args[0]) {
                case "ready" -> ready(admin, Long.parseLong(args[2]));
                case "topics" -> topics(admin, Path.of(args[2]));
                default -> {
                    System.err.println("unknown command " + args[0]);
                    System.exit(2);
                }
            }
        }
    }

    static void ready(Admin admin, long timeoutSecs) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(timeoutSecs);
        Exception last = null;
        while (System.nanoTime() < deadline) {
            try {
                var cluster = admin.describeCluster();
                int nodes = cluster.nodes().get(5, TimeUnit.SECONDS).size();
                System.out.println("kafka ready: cluster " + cluster.clusterId().get() + ", " + nodes + " broker(s)");
                return;
            } catch (Exception e) {
                last = e;
                Thread.sleep(500);
            }
        }
        System.err.println("kafka not ready after " + timeoutSecs + "s: " + last);
        System.exit(1);
    }

    static void topics(Admin admin, Path file) throws Exception {
        Set<String> existing = admin.listTopics().names().get(10, TimeUnit.SECONDS);
        List<NewTopic> wanted = new ArrayList<>();
        for (String line : Files.readAllLines(file)) {
            String trimmed = line.strip();
            if (trimmed.isEmpty() || trimmed.startsWith("#")) {
                continue;
            }
            String[] parts = trimmed.split("\\s+");
            if (parts.length != 2) {
                throw new IllegalArgumentException("bad topic line (want `name partitions`): " + line);
            }
            if (!existing.contains(parts[0])) {
                wanted.add(new NewTopic(parts[0], Integer.parseInt(parts[1]), (short) 1));
            }
        }
        if (!wanted.isEmpty()) {
            try {
                admin.createTopics(wanted).all().get(30, TimeUnit.SECONDS);
            } catch (ExecutionException e) {
                if (!(e.getCause() instanceof org.apache.kafka.common.errors.TopicExistsException)) {
                    throw e;
                }
            }
        }
        Set<String> after = admin.listTopics().names().get(10, TimeUnit.SECONDS);
        for (NewTopic t : wanted) {
            if (!after.contains(t.name())) {
                System.err.println("topic " + t.name() + " missing after create");
                System.exit(1);
            }
        }
        System.out.println("kafka topics: created " + wanted.size() + ", " + after.size() + " present");
    }
}
