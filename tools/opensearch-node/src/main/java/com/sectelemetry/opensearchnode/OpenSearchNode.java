package com.sectelemetry.opensearchnode;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;

import org.opensearch.analysis.common.CommonAnalysisPlugin;
import org.opensearch.common.logging.LogConfigurator;
import org.opensearch.common.settings.Settings;
import org.opensearch.core.common.transport.TransportAddress;
import org.opensearch.env.Environment;
import org.opensearch.http.HttpServerTransport;
import org.opensearch.ingest.common.IngestCommonPlugin;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.painless.PainlessPlugin;
import org.opensearch.plugins.Plugin;
import org.opensearch.script.mustache.MustachePlugin;
import org.opensearch.transport.Netty4Plugin;

/**
 * A single-node OpenSearch cluster on loopback, started in-process the way
 * OpenSearch's own integration tests start theirs (a Node with its modules
 * given as classpath plugins), for the end-to-end tests and
 * {@code make run OUTPUT=opensearch}.
 *
 * <p>Usage: {@code OpenSearchNode HOME ADDR_FILE [setting=value ...]}. HOME
 * holds the node's data and logs; once the node answers, its HTTP base URL is
 * written to ADDR_FILE. Settings after these override the defaults, e.g.
 * {@code compatibility.override_main_response_version=true}. SIGTERM (or
 * SIGINT) closes the node cleanly.
 */
public final class OpenSearchNode {
    /** The modules a distribution ships that the tests need; no security plugin. */
    private static final List<Class<? extends Plugin>> MODULES = List.of(
        Netty4Plugin.class,
        CommonAnalysisPlugin.class,
        PainlessPlugin.class,
        IngestCommonPlugin.class,
        MustachePlugin.class
    );

    /** Node's constructor that takes classpath plugins is protected. */
    private static final class EmbeddedNode extends Node {
        EmbeddedNode(Environment environment, Collection<Class<? extends Plugin>> plugins) {
            super(environment, plugins, true);
        }
    }

    private OpenSearchNode() {}

    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: OpenSearchNode HOME ADDR_FILE [setting=value ...]");
            System.exit(2);
        }
        Path home = Paths.get(args[0]).toAbsolutePath();
        Path addrFile = Paths.get(args[1]).toAbsolutePath();
        Files.createDirectories(home.resolve("config"));

        Settings.Builder settings = Settings.builder()
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("cluster.name", "defender-e2e")
            .put("node.name", "defender-e2e")
            .put("discovery.type", "single-node")
            .put("network.host", "127.0.0.1")
            // Free ports, so that parallel tests and runs do not collide;
            // the HTTP one is reported through ADDR_FILE.
            .put("http.port", "0")
            .put("transport.port", "0")
            .put("http.type", "netty4")
            .put("transport.type", "netty4")
            // A test machine's disk may be fuller than the watermarks allow.
            .put("cluster.routing.allocation.disk.threshold_enabled", false);
        for (int i = 2; i < args.length; i++) {
            int eq = args[i].indexOf('=');
            if (eq <= 0) {
                System.err.println("OpenSearchNode: setting " + (i - 1) + " is not setting=value: " + args[i]);
                System.exit(2);
            }
            settings.put(args[i].substring(0, eq), args[i].substring(eq + 1));
        }

        Environment environment = InternalSettingsPreparer.prepareEnvironment(
            settings.build(), Map.of(), home.resolve("config"), () -> "defender-e2e");
        LogConfigurator.configureWithoutConfig(environment.settings());

        long started = System.nanoTime();
        Node node = new EmbeddedNode(environment, MODULES);
        CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
            } catch (IOException e) {
                System.err.println("OpenSearchNode: closing the node failed: " + e);
            }
            closed.countDown();
        }, "close-node"));
        node.start();

        TransportAddress http = node.injector().getInstance(HttpServerTransport.class).boundAddress().publishAddress();
        String url = "http://" + http.getAddress() + ":" + http.getPort();
        // Written beside and renamed, so that a reader never sees half a URL.
        Path tmp = addrFile.resolveSibling(addrFile.getFileName() + ".tmp");
        Files.write(tmp, (url + "\n").getBytes(StandardCharsets.UTF_8));
        Files.move(tmp, addrFile, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        System.out.printf("OpenSearchNode: listening at %s, started in %d ms%n", url, (System.nanoTime() - started) / 1_000_000);
        closed.await();
    }
}
