// A JDBC client for tests/integration/test_pg_backend_ends.py: connects, prints its
// backend pid, waits for a line on stdin (the test ends that backend meanwhile), runs
// SELECT 1 and prints the SQLState and message of the SQLException it gets ("none" if
// none). Usage: java -cp postgresql.jar Terminated.java URL USER PASSWORD
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;

public class Terminated {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0], args[1], args[2])) {
            try (Statement s = c.createStatement();
                 ResultSet r = s.executeQuery("SELECT pg_backend_pid()")) {
                r.next();
                System.out.println(r.getInt(1));
                System.out.flush();
            }
            new BufferedReader(new InputStreamReader(System.in)).readLine();
            try (Statement s = c.createStatement()) {
                s.executeQuery("SELECT 1").close();
                System.out.println("none");
            } catch (SQLException e) {
                System.out.println(e.getSQLState() + " " + e.getMessage());
            }
        }
    }
}
