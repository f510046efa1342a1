package dev.cairn;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/** A real cairn-server for the tests: TLS with a CA made for the run, tokens, its own dir. */
final class TestServer implements AutoCloseable {
    final Path dir;
    final String address;
    final String ca;
    private final Process process;
    private final Path secret;

    TestServer(Path dir) throws IOException, InterruptedException {
        this.dir = dir;
        run("python3", System.getProperty("cairn.certs.script"), dir.toString());
        secret = dir.resolve("secret");
        Files.write(secret, "a-test-secret-of-enough-length-0123456789".getBytes(StandardCharsets.UTF_8));
        ca = dir.resolve("ca.pem").toString();
        Path log = dir.resolve("server.log");
        process = new ProcessBuilder(server(), "--db", dir.resolve("server.db").toString(),
                "--listen", "127.0.0.1:0", "--tls-cert", dir.resolve("server.pem").toString(),
                "--tls-key", dir.resolve("server.key").toString(), "--token-secret", secret.toString())
                .redirectErrorStream(true).redirectOutput(log.toFile()).start();
        Pattern listening = Pattern.compile("listening on (127\\.0\\.0\\.1:\\d+)");
        String found = null;
        for (int i = 0; i < 500 && found == null; i++) {
            Thread.sleep(10);
            if (!Files.exists(log)) continue;
            Matcher m = listening.matcher(new String(Files.readAllBytes(log), StandardCharsets.UTF_8));
            if (m.find()) found = m.group(1);
        }
        if (found == null) {
            process.destroyForcibly();
            throw new IOException("cairn-server did not start");
        }
        address = found;
    }

    /** A token for {@code subject}; {@code write}: the collections it may write (null: all). */
    String token(String subject, String write) throws IOException, InterruptedException {
        return token(subject, write, 0);
    }

    /** The same, valid for {@code ttlSeconds} (0: the default, a day). */
    String token(String subject, String write, long ttlSeconds) throws IOException, InterruptedException {
        List<String> cmd = new ArrayList<>(Arrays.asList(server(), "token", "--token-secret",
                secret.toString(), "--sub", subject));
        if (ttlSeconds != 0) {
            cmd.add("--ttl");
            cmd.add(Long.toString(ttlSeconds));
        }
        if (write != null) {
            cmd.add("--write");
            cmd.add(write);
        }
        return run(cmd.toArray(new String[0])).trim();
    }

    Sync.Options options(String token) {
        // The certificate names localhost (mbedTLS 2.28 does not match IP addresses).
        return new Sync.Options(address).caFile(ca).serverName("localhost").token(token);
    }

    private static String server() {
        return System.getProperty("cairn.server.path");
    }

    private static String run(String... cmd) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(cmd).redirectError(ProcessBuilder.Redirect.INHERIT).start();
        byte[] out = readAll(p);
        if (p.waitFor() != 0) throw new IOException("failed: " + String.join(" ", cmd));
        return new String(out, StandardCharsets.UTF_8);
    }

    private static byte[] readAll(Process p) throws IOException {
        java.io.ByteArrayOutputStream b = new java.io.ByteArrayOutputStream();
        byte[] buf = new byte[4096];
        for (int n; (n = p.getInputStream().read(buf)) > 0; ) b.write(buf, 0, n);
        return b.toByteArray();
    }

    @Override
    public void close() {
        process.destroy();  // SIGTERM: the server stops cleanly
        try {
            process.waitFor();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    static void deleteTree(File f) {
        File[] children = f.listFiles();
        if (children != null) for (File c : children) deleteTree(c);
        f.delete();
    }
}
