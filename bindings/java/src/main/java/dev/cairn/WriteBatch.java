package dev.cairn;

import java.util.ArrayList;
import java.util.List;
import java.util.Objects;

/**
 * Changes applied atomically by {@link Replica#write}: all or none. Values are {@code null},
 * {@code Boolean}, {@code Long} or {@code Integer} (64-bit integers), {@code Double} or {@code
 * Float}, {@code String} or {@code byte[]}. Not thread-safe; reusable (write leaves it as is).
 */
public final class WriteBatch {
    static final int SET = 0;
    static final int INCREMENT = 1;
    static final int DELETE = 2;

    final List<Integer> kinds = new ArrayList<>();
    final List<String> collections = new ArrayList<>();
    final List<String> keys = new ArrayList<>();
    final List<String> fields = new ArrayList<>();
    final List<Object> values = new ArrayList<>();

    public WriteBatch set(String collection, String key, String field, Object value) {
        return add(SET, collection, key, field, checked(field, value));
    }

    /** A field's value as the engine takes it (a copy of byte[], kept as given), or throws. */
    static Object checked(String field, Object value) {
        Objects.requireNonNull(field, "field");
        if (value != null && !(value instanceof Boolean || value instanceof Long
                || value instanceof Integer || value instanceof Short || value instanceof Byte
                || value instanceof Double || value instanceof Float || value instanceof String
                || value instanceof byte[])) {
            throw new IllegalArgumentException(
                    "unsupported value type " + value.getClass().getName() + " for field " + field);
        }
        if (value instanceof byte[]) return ((byte[]) value).clone();
        return normalize(value);
    }

    /** Integer, Short, Byte as Long and Float as Double: the engine's value types. */
    static Object normalize(Object value) {
        if (value instanceof Integer || value instanceof Short || value instanceof Byte) {
            return ((Number) value).longValue();
        }
        if (value instanceof Float) return ((Float) value).doubleValue();
        return value;
    }

    public WriteBatch increment(String collection, String key, String field, long delta) {
        Objects.requireNonNull(field, "field");
        return add(INCREMENT, collection, key, field, delta);
    }

    public WriteBatch delete(String collection, String key) {
        return add(DELETE, collection, key, null, null);
    }

    public int size() {
        return kinds.size();
    }

    public void clear() {
        kinds.clear();
        collections.clear();
        keys.clear();
        fields.clear();
        values.clear();
    }

    private WriteBatch add(int kind, String collection, String key, String field, Object value) {
        Objects.requireNonNull(collection, "collection");
        Objects.requireNonNull(key, "key");
        kinds.add(kind);
        collections.add(collection);
        keys.add(key);
        fields.add(field);
        values.add(value);
        return this;
    }
}
