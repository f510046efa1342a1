package dev.cairn;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.lang.reflect.Field;
import java.lang.reflect.Modifier;
import org.junit.jupiter.api.Test;

/** Every code the engine can report has its constant in CairnException, with the same number. */
class ErrorCodesTest {
    @Test
    void everyEngineCodeExistsInJava() throws Exception {
        int codes = 0;
        for (int code = -1; code >= -256; code--) {
            String name = Cairn.codeName(code);
            if (name.equals("EUNKNOWN")) continue;
            codes++;
            Field f;
            try {
                f = CairnException.class.getField(name);
            } catch (NoSuchFieldException e) {
                fail("CairnException has no constant " + name + " (" + code + ")");
                return;
            }
            assertTrue(Modifier.isStatic(f.getModifiers()) && Modifier.isFinal(f.getModifiers()));
            assertEquals(code, f.getInt(null), name);
        }
        assertTrue(codes >= 18, "the engine named only " + codes + " codes");
        // And nothing in Java that the engine does not know.
        int constants = 0;
        for (Field f : CairnException.class.getFields()) {
            if (f.getType() == int.class && Modifier.isStatic(f.getModifiers())) {
                constants++;
                assertEquals(f.getName(), Cairn.codeName(f.getInt(null)));
            }
        }
        assertEquals(codes, constants);
        assertEquals("EINVAL", Cairn.codeName(CairnException.EINVAL));
    }
}
